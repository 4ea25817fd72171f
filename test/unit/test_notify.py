"""sd_notify without libsystemd: addresses, the watchdog period, the environment children inherit."""
from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import pytest

from narwhal.notify import Notifier


def receiver(tmp_path: Path) -> tuple[socket.socket, str]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify.sock")
    sock.bind(path)
    sock.settimeout(5)
    return sock, path


def test_path_socket_gets_each_message_as_one_datagram(tmp_path: Path) -> None:
    sock, path = receiver(tmp_path)
    env = {"NOTIFY_SOCKET": path, "OTHER": "x"}
    n = Notifier.from_env(env)
    n.status("recovering\nsandboxes")
    n.ready("serving")
    n.stopping()
    assert [sock.recv(4096).decode() for _ in range(3)] == [
        "STATUS=recovering sandboxes", "READY=1\nSTATUS=serving", "STOPPING=1"]
    assert env == {"OTHER": "x"}  # children (containerd speaks the protocol too) must not inherit it
    n.close()
    sock.close()


def test_abstract_socket(tmp_path: Path) -> None:
    name = f"narwhal-test-{os.getpid()}-{tmp_path.name}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5)
    n = Notifier.from_env({"NOTIFY_SOCKET": "@" + name})
    assert n.send("READY=1")
    assert sock.recv(100) == b"READY=1"
    n.close()
    sock.close()


def test_no_socket_is_a_silent_no_op() -> None:
    n = Notifier.from_env({})
    assert not n.enabled and not n.send("READY=1")
    assert not Notifier.from_env({"NOTIFY_SOCKET": "relative/path"}).enabled
    missing = Notifier.from_env({"NOTIFY_SOCKET": "/nonexistent/notify.sock"})
    assert not missing.send("READY=1")
    missing.close()


@pytest.mark.parametrize(("env", "interval"), [
    ({"WATCHDOG_USEC": "3000000"}, 1.5),
    ({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid())}, 1.5),
    ({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "1"}, None),  # another process's watchdog
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
    ({}, None),
])
def test_watchdog_interval_is_half_the_period_for_our_pid(env: dict[str, str], interval: float | None) -> None:
    n = Notifier.from_env({"NOTIFY_SOCKET": "/run/x.sock", **env})
    assert n.watchdog_interval == interval


async def test_watchdog_pings_until_cancelled(tmp_path: Path) -> None:
    sock, path = receiver(tmp_path)
    n = Notifier(path, watchdog_interval=0.01)
    task = asyncio.create_task(n.watchdog())
    got = [await asyncio.to_thread(sock.recv, 100) for _ in range(3)]
    task.cancel()
    assert got == [b"WATCHDOG=1"] * 3
    n.close()
    sock.close()


def test_a_receiver_that_does_not_read_never_blocks_us_for_long(tmp_path: Path) -> None:
    sock, path = receiver(tmp_path)
    n = Notifier(path)
    sent = [n.send(f"STATUS={i}") for i in range(200)]  # far more than a datagram queue holds
    assert sent[0] and not all(sent)
    n.close()
    sock.close()
