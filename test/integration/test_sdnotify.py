"""A real narwhald under systemd's notify protocol, with a datagram socket standing in for systemd:
STATUS lines while it recovers, READY=1 only once both sockets answer, RELOADING=1/READY=1 around a
SIGHUP, STOPPING=1 on SIGTERM, WATCHDOG=1 pings throughout; its containerd inherits none of it."""
from __future__ import annotations

import os
import queue
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cri_api.v1 import api_pb2, api_pb2_grpc
from lib.daemon import DaemonProcess, start_daemon


@pytest.fixture
def unstarted() -> Iterator[DaemonProcess]:
    d = start_daemon(start=False)
    try:
        yield d
    finally:
        d.destroy()


PING = "WATCHDOG=1"


class Receiver:
    """systemd's side: a datagram socket read on a thread from the start (an unread socket fills up)."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.1)
        self._stop = threading.Event()
        self.messages: queue.Queue[str] = queue.Queue()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                self.messages.put(self.sock.recv(4096).decode())
            except TimeoutError:
                continue

    def until(self, line: str, timeout: float = 60.0) -> list[str]:
        """Datagrams up to and including the first holding the line ``line``."""
        got: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                message = self.messages.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                break
            got.append(message)
            if line in message.split("\n"):
                return got
        raise AssertionError(f"no {line} within {timeout}s; got {got}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


def without_pings(messages: list[str]) -> list[str]:
    return [m for m in messages if m != PING]


def docker_ping(d: DaemonProcess) -> bytes:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(d.docker_socket))
        s.sendall(b"GET /_ping HTTP/1.0\r\nHost: d\r\n\r\n")
        return s.recv(4096)


def test_notify_messages_in_order_on_an_abstract_socket(unstarted: DaemonProcess) -> None:
    d = unstarted
    name = f"narwhal-notify-{os.getpid()}-{d.base.name}"
    sock = Receiver("\0" + name)
    try:
        env = {**os.environ, "NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "200000"}
        d.start(env=env)  # returns once the log says ready; the datagrams tell the order
        received = sock.until("READY=1")
        start = without_pings(received)
        # At READY=1 both front ends answer at once (no retry).
        version = api_pb2_grpc.RuntimeServiceStub(d.channel()).Version(api_pb2.VersionRequest(), timeout=10)
        assert version.runtime_name == "narwhal"
        assert docker_ping(d).split(b"\r\n")[0].endswith(b" 200 OK")
        # (with NARWHAL_TEST_FLAGS="--log-service true" the service starts right after containerd)
        statuses = [m for m in start if m.startswith("STATUS=") and m != "STATUS=starting the log service"]
        assert statuses[:3] == ["STATUS=starting containerd", "STATUS=recovering interrupted image pulls",
                                "STATUS=recovering CRI sandboxes and containers"]
        assert "STATUS=recovering Docker containers" in statuses
        assert start[-1] == f"READY=1\nSTATUS=serving CRI on {d.cri_socket}, Docker API on {d.docker_socket}"

        assert d.proc is not None
        d.proc.send_signal(signal.SIGHUP)
        reload = without_pings(sock.until("READY=1"))
        assert reload[0].startswith("RELOADING=1\nMONOTONIC_USEC=") and reload[-1] == "READY=1"

        d.proc.send_signal(signal.SIGTERM)
        stop = sock.until("STOPPING=1")
        assert without_pings(stop) == ["STOPPING=1\nSTATUS=stopping"]
        assert d.proc.wait(30) == 0
        received += reload + stop
        # containerd (which speaks sd_notify too) did not inherit the socket: it never sent READY=1 to us.
        environ = Path(f"/proc/{d.containerd_pid}/environ").read_bytes().split(b"\0")
        assert not any(v.startswith((b"NOTIFY_SOCKET=", b"WATCHDOG_")) for v in environ)
    finally:
        sock.close()
    assert PING in received  # every 0.1 s (WATCHDOG_USEC / 2) while it ran


def test_watchdog_for_another_pid_is_not_pinged(unstarted: DaemonProcess) -> None:
    d = unstarted
    path = d.base / "notify.sock"
    sock = Receiver(str(path))
    try:
        d.start(env={**os.environ, "NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "100000", "WATCHDOG_PID": "1"})
        got = sock.until("READY=1")
        assert d.stop() == 0
        got += sock.until("STOPPING=1")
        assert PING not in got and got[-1] == "STOPPING=1\nSTATUS=stopping"
    finally:
        sock.close()
