"""Clients that go away mid-stream from ``docker export`` and ``docker cp`` (issue 15, found by the fuzzer):
the tar helper is killed and the container's view unmounted every time, for stopped and running containers."""
from __future__ import annotations

import http.client
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from lib.docker import DOCKER, DockerDaemon, docker_daemon, eventually
from lib.leaks import leftovers
from lib.registry import Registry

ROUNDS = 15


class _UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=30)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(self._path)


@pytest.fixture(scope="module")
def dd(registry: Registry) -> Iterator[DockerDaemon]:
    for d in docker_daemon(registry):
        yield d
        d.rm_all()


def _interrupt(dd: DockerDaemon, url: str, *, read: int = 16 * 1024) -> None:
    """GET ``url``, read ``read`` bytes of its (much larger) body, then drop the connection."""
    conn = _UnixHTTP(str(dd.daemon.docker_socket))
    try:
        conn.request("GET", url)
        resp = conn.getresponse()
        assert resp.status == 200, resp.read()
        assert len(resp.read(read)) == read
    finally:
        assert conn.sock is not None
        conn.sock.shutdown(socket.SHUT_RDWR)
        conn.close()


def _views(dd: DockerDaemon) -> list[str]:
    views = str(dd.daemon.state / "docker" / "views")
    return [m for m in leftovers(dd.daemon).get("mounts", []) if m.startswith(views)]


def _helpers(dd: DockerDaemon) -> list[int]:
    """The tar helpers narwhald has running (its children running rootfs_tar.py)."""
    assert dd.daemon.proc is not None
    out = []
    pid = dd.daemon.proc.pid
    children: list[str] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            children += task.read_text().split()
        except FileNotFoundError:  # a thread that ended meanwhile
            pass
    for child in children:
        try:
            if b"rootfs_tar.py" in Path(f"/proc/{child}/cmdline").read_bytes():
                out.append(int(child))
        except FileNotFoundError:
            pass
    return out


def _nothing_running(dd: DockerDaemon) -> bool:
    return not _views(dd) and not _helpers(dd)


@pytest.mark.parametrize("running", [False, True], ids=["stopped", "running"])
def test_interrupted_export_and_cp_leave_nothing(dd: DockerDaemon, running: bool, tmp_path: Path) -> None:
    name = f"intr-{'run' if running else 'stop'}"
    # Incompressible MiBs, far more than the socket buffers hold: the tar is still streaming when the
    # client goes away, with the helper blocked writing to its pipe.
    fill = "head -c 8388608 /dev/urandom > /big1 && head -c 8388608 /dev/urandom > /big2"
    if running:
        dd.out("run", "-d", "--name", name, "busybox", "sh", "-c", f"{fill} && touch /ready && exec sleep 600")
        assert eventually(lambda: dd.docker("exec", name, "test", "-e", "/ready", check=False).returncode == 0)
    else:
        dd.out("run", "--name", name, "busybox", "sh", "-c", fill)
    try:
        for i in range(ROUNDS):
            for url in (f"/containers/{name}/export", f"/containers/{name}/archive?path=/"):
                _interrupt(dd, url)
                assert eventually(lambda: _nothing_running(dd), timeout=30), \
                    f"round {i}, {url}: views {_views(dd)}, helpers {_helpers(dd)}"
        # The real CLI, cut off by `head`: docker export, and docker cp to stdout.
        for args in (f"export {name}", f"cp {name}:/ -"):
            for i in range(3):
                subprocess.run(f"{DOCKER} {args} | head -c 65536 > /dev/null", shell=True, check=True,
                               env=dd.daemon.docker_env(), timeout=120)
                assert eventually(lambda: _nothing_running(dd), timeout=30), \
                    f"docker {args} | head, round {i}: views {_views(dd)}, helpers {_helpers(dd)}"
        # The daemon still serves the same container completely afterwards.
        dd.out("export", "-o", str(tmp_path / "out.tar"), name)
        assert (tmp_path / "out.tar").stat().st_size > 2 * 8388608
        assert _nothing_running(dd)
    finally:
        dd.docker("rm", "-f", name, check=False)
    assert leftovers(dd.daemon) == {}
