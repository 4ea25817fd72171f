"""Hostile clients, containers and registries against a real narwhald (issue 15), bounded in count and time, on
loopback only.  Each test reads narwhald's RSS (VmRSS/VmHWM) and holds it under a stated bound; the figures
are printed (and appended to $NARWHAL_FUZZ_REPORT) for docs/security.md.  `hack/fuzz` runs them bigger."""
from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import threading
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from aiohttp import web
from lib.docker import DockerDaemon, docker_daemon, eventually
from lib.fuzz_docker import _UnixConnection
from lib.registry import Registry

LOG_BYTES = int(os.environ.get("NARWHAL_ABUSE_LOG_BYTES", str(128 << 20)))
CLIENTS = int(os.environ.get("NARWHAL_ABUSE_CLIENTS", "200"))
MiB = 1 << 20


@pytest.fixture(scope="module")
def dd(registry: Registry) -> Iterator[DockerDaemon]:
    yield from docker_daemon(registry)


def _status(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


def _pid(dd: DockerDaemon) -> int:
    assert dd.daemon.proc is not None
    return dd.daemon.proc.pid


class Peak:
    """Samples narwhald's RSS every 50 ms while the block runs: the peak is what the block cost."""

    def __init__(self, pid: int) -> None:
        self.pid, self.base, self.peak = pid, _status(pid)["VmRSS"], 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _status(self.pid)["VmRSS"])
            self._stop.wait(0.05)

    def __enter__(self) -> Peak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _status(self.pid)["VmRSS"])

    @property
    def growth(self) -> int:
        return self.peak - self.base


def _report(name: str, **data: object) -> None:
    path = os.environ.get("NARWHAL_FUZZ_REPORT")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"suite": name, **data}) + "\n")
    print(name, json.dumps(data))


def _request(dd: DockerDaemon, method: str, path: str, body: bytes | None = None,
             timeout: float = 30) -> tuple[int, bytes]:
    conn = _UnixConnection(dd.daemon.docker_socket, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
        with conn.getresponse() as resp:
            return resp.status, resp.read()
    finally:
        conn.close()


def _ping_time(dd: DockerDaemon) -> float:
    start = time.monotonic()
    status, _ = _request(dd, "GET", "/_ping", timeout=10)
    assert status == 200
    return time.monotonic() - start


def test_bad_input_is_a_400_with_a_message(dd: DockerDaemon) -> None:
    cases = [
        ("/containers/create?name=web%0A", b'{"Image": "busybox"}', 400, "Invalid container name"),
        ("/containers/create", b'{"Image": "busybox", "HostConfig": {"Memory": 1e400}}', 400, "invalid JSON"),
        ("/containers/create", b'{"Image": "busybox", "HostConfig": {"Memory": NaN}}', 400, "invalid JSON"),
        ("/containers/create", b'{"Image": "busybox", "HostConfig": {"Memory": 1e30}}', 400, "invalid JSON"),
        ("/containers/create", b'{"Image": "busybox", "HostConfig": {"Memory": 1e19}}', 400, "int64"),
        ("/containers/create", '{"Image": "busybox", "ExposedPorts": {"８０/tcp": {}}}'.encode(), 400, "port"),
        ("/containers/create", b'{"Image": "busybox", "HostConfig": {"ExtraHosts": ["web\\n1.2.3.4 x:1.2.3.4"]}}',
         400, "bad format for add-host"),
        ("/containers/create", b'{"Image": "busybox", "HostConfig": {"ExtraHosts": ["web:1.2.3.4 x"]}}',
         400, "invalid IP address in add-host"),
        ("/containers/create", b'{"Image": "busybox", "HostConfig": {"SecurityOpt": ["apparmor=custom"]}}',
         400, "AppArmor is not enabled"),
        ("/volumes/create", b'{"Name": "vol\\n"}', 400, ""),
        # moby accepts any non-blank network name (libnetwork's IsValidName), a newline included: names
        # key records only (bridges, CNI names and chains derive from the ID); a blank one is refused.
        ("/networks/create", b'{"Name": " \\n"}', 400, "must not be empty"),
    ]
    for path, body, status, words in cases:
        got, data = _request(dd, "POST", path, body)
        message = json.loads(data).get("message", "")
        assert (got, words in message) == (status, True), (path, body, got, message)
    big = b'{"Image": "busybox", "Labels": {"a": "' + b"x" * (17 * MiB) + b'"}}'
    got, data = _request(dd, "POST", "/containers/create", big)
    assert got == 413 and "message" in json.loads(data)
    assert dd.docker("ps", "-aq").stdout.strip() == ""


def test_backtracking_name_filter_answers_at_once(dd: DockerDaemon) -> None:
    """field-notes.md "A filter that freezes the daemon"."""
    dd.out("create", "--name", "a" * 30 + "-", "busybox", "true")
    query = "all=1&filters=" + "%7B%22name%22%3A%5B%22(a%2B)%2B%24%22%5D%7D"
    start = time.monotonic()
    status, data = _request(dd, "GET", f"/containers/json?{query}", timeout=20)
    assert status == 200 and json.loads(data) == [] and time.monotonic() - start < 5
    status, data = _request(dd, "GET", "/containers/json?all=1&filters=%7B%22name%22%3A%5B%22a%2B-%24%22%5D%7D")
    assert status == 200 and len(json.loads(data)) == 1
    dd.out("rm", "a" * 30 + "-")


def test_concurrent_clients(dd: DockerDaemon) -> None:
    def client(_: int) -> int:
        status, _ = _request(dd, "GET", "/containers/json?all=1", timeout=120)
        return status

    with Peak(_pid(dd)) as peak, ThreadPoolExecutor(CLIENTS) as pool:
        start = time.monotonic()
        statuses = list(pool.map(client, range(CLIENTS)))
        elapsed = time.monotonic() - start
    assert statuses == [200] * CLIENTS
    _report("concurrent_clients", clients=CLIENTS, seconds=round(elapsed, 2), rss_growth_mib=peak.growth // MiB,
            rss_peak_mib=peak.peak // MiB)
    assert peak.growth < 128 * MiB


def test_slowloris_and_stalled_readers(dd: DockerDaemon) -> None:
    """Connections that send a header a byte at a time, and streams (logs -f, events) whose client stops
    reading: the daemon keeps answering others, and its memory does not grow with what the streams produce."""
    dd.out("run", "-d", "--name", "chatty", "busybox", "sh", "-c", "yes 'a fairly long line of output'")
    slow: list[socket.socket] = []
    stalled: list[socket.socket] = []
    with Peak(_pid(dd)) as peak:
        try:
            for _ in range(100):
                s = socket.socket(socket.AF_UNIX)
                s.connect(str(dd.daemon.docker_socket))
                s.sendall(b"GET /_ping HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                slow.append(s)
            for path in ("/containers/chatty/logs?follow=1&stdout=1", "/events"):
                s = socket.socket(socket.AF_UNIX)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                s.connect(str(dd.daemon.docker_socket))
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                stalled.append(s)  # never read
            for i in range(20):  # events for the stalled /events reader
                dd.out("create", "--name", f"ev{i}", "busybox", "true")
                dd.out("rm", f"ev{i}")
                for s in slow:
                    s.send(b"a")
            deadline = time.monotonic() + 10
            pings = []
            while time.monotonic() < deadline:
                pings.append(_ping_time(dd))
                time.sleep(0.5)
        finally:
            for s in slow + stalled:
                s.close()
    dd.out("rm", "-f", "chatty")
    _report("slowloris_and_stalled_readers", slow_connections=100, stalled_streams=2,
            max_ping_seconds=round(max(pings), 3), rss_growth_mib=peak.growth // MiB, rss_peak_mib=peak.peak // MiB)
    assert max(pings) < 3
    assert peak.growth < 64 * MiB


def test_a_line_without_newline(dd: DockerDaemon) -> None:
    """A container printing LOG_BYTES without a newline: docker logs streams it in pieces, narwhald's memory
    stays flat."""
    cid = dd.out("run", "-d", "busybox", "sh", "-c", f"head -c {LOG_BYTES} /dev/zero | tr '\\0' x")
    assert dd.out("wait", cid) == "0"
    with Peak(_pid(dd)) as peak:
        conn = _UnixConnection(dd.daemon.docker_socket, timeout=300)
        conn.request("GET", f"/containers/{cid}/logs?stdout=1")
        resp = conn.getresponse()
        total, frames, largest = 0, 0, 0
        while header := resp.read(8):  # stdcopy frames: 8-byte header, then the payload
            size = int.from_bytes(header[4:8], "big")
            payload = resp.read(size)
            total, frames, largest = total + len(payload), frames + 1, max(largest, size)
        resp.close()
        conn.close()
    assert total == LOG_BYTES and largest <= 32 * 1024, (total, frames, largest)
    dd.out("rm", cid)
    _report("line_without_newline", bytes=LOG_BYTES, frames=frames, largest_frame=largest,
            rss_growth_mib=peak.growth // MiB, rss_peak_mib=peak.peak // MiB)
    assert peak.growth < 64 * MiB


class _HostileRegistry:
    """/v2/bomb serves a gzip bomb (Content-Encoding: gzip), /v2/endless a body without end."""

    def __init__(self) -> None:
        comp = zlib.compressobj(9, zlib.DEFLATED, 31)
        zeros = bytes(MiB)
        self.bomb = b"".join([*(comp.compress(zeros) for _ in range(512)), comp.flush()])  # 512 MiB inflated
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def _root(self, request: web.Request) -> web.Response:
        return web.json_response({})

    async def _bomb(self, request: web.Request) -> web.Response:
        return web.Response(body=self.bomb, status=404 if "manifests" not in request.path else 200,
                            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})

    async def _endless(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
        await resp.prepare(request)
        try:
            for _ in range(1 << 14):  # 1 GiB at most
                await resp.write(b"{" * 65536)
        except ConnectionError:
            pass
        return resp

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_get("/v2/", self._root)
        app.router.add_get("/v2/bomb/{tail:.*}", self._bomb)
        app.router.add_get("/v2/endless/{tail:.*}", self._endless)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        self._loop.run_forever()

    def __enter__(self) -> _HostileRegistry:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


def test_hostile_registry(dd: DockerDaemon) -> None:
    with _HostileRegistry() as reg, Peak(_pid(dd)) as peak:
        for name in ("bomb", "endless"):
            start = time.monotonic()
            pulled = dd.docker("pull", f"127.0.0.1:{reg.port}/{name}:latest", check=False, timeout=120)
            assert pulled.returncode != 0 and time.monotonic() - start < 60, pulled.stderr
    assert dd.docker("version").returncode == 0
    _report("hostile_registry", gzip_bomb_inflated_mib=512, endless_body_cap_gib=1,
            rss_growth_mib=peak.growth // MiB, rss_peak_mib=peak.peak // MiB)
    assert peak.growth < 64 * MiB


def test_socket_and_log_modes(dd: DockerDaemon) -> None:
    for path in (dd.daemon.docker_socket, dd.daemon.cri_socket):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660, path
    log = dd.daemon.state / "containerd" / "containerd.log"
    if not log.exists():
        log = next(dd.daemon.base.rglob("containerd.log"))
    assert stat.S_IMODE(os.stat(log).st_mode) == 0o600
    assert eventually(lambda: dd.docker("ps", "-q").stdout.strip() == "", timeout=30)
