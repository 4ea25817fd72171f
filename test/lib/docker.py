"""Docker API test helpers: a narwhald whose docker.io mirror is the session registry (busybox pushed
there, so ``busybox`` resolves offline) and a runner for the real docker CLI against it.

Use from a module-scoped fixture::

    @pytest.fixture(scope="module")
    def dockerd(registry):
        yield from docker_daemon(registry)
"""
from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from lib.cni_host import InstanceNetwork
from lib.daemon import DaemonProcess, start_daemon
from lib.images import push
from lib.leaks import host_leftovers
from lib.registry import Registry
from lib.wait import wait_for

DOCKER = "/usr/local/bin/docker"
BUSYBOX = "busybox"


def checked_cli(daemon: DaemonProcess) -> Callable[..., subprocess.CompletedProcess[bytes]]:
    """The real docker CLI against ``daemon``, output as bytes (for byte-exact checks); a non-zero exit fails the
    test with the CLI's stderr."""
    env = daemon.docker_env()

    def docker(*args: str) -> subprocess.CompletedProcess[bytes]:
        proc = subprocess.run([DOCKER, *args], env=env, capture_output=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return proc

    return docker


@dataclass
class DockerDaemon:
    daemon: DaemonProcess

    def docker(self, *args: str, check: bool = True, timeout: float = 120,
               input_: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run the docker CLI against this daemon; ``check`` raises with stderr on a non-zero exit."""
        proc = subprocess.run([DOCKER, *args], env=self.daemon.docker_env(), capture_output=True, text=True,
                              timeout=timeout, input=input_)
        if check and proc.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
        return proc

    def out(self, *args: str) -> str:
        return self.docker(*args).stdout.strip()

    def inspect(self, ref: str) -> dict[str, Any]:
        data = json.loads(self.out("inspect", "--type", "container", ref))
        assert isinstance(data, list) and len(data) == 1
        found: dict[str, Any] = data[0]
        return found

    def rm_all(self) -> None:
        """Remove every container; tolerant (also used in teardown, where the daemon may be gone)."""
        ids = self.docker("ps", "-aq", check=False).stdout.split()
        if ids:
            self.docker("rm", "-f", *ids, check=False)


def mirror_config(registry_host: str) -> str:
    """narwhald config making ``registry_host`` docker.io's mirror (so ``busybox`` resolves offline)."""
    return f'registry:\n  mirrors:\n    docker.io: ["http://{registry_host}"]\n'


def docker_daemon(registry: Registry, *, pull: bool = True) -> Iterator[DockerDaemon]:
    """A narwhald with the registry as docker.io's mirror and busybox pulled into its Docker domain;
    torn down (with its network) when the generator closes."""
    push(registry.host, "library/busybox")
    d = start_daemon(mirror_config(registry.host))
    try:
        dd = DockerDaemon(d)
        if pull:
            dd.docker("pull", BUSYBOX)
        yield dd
    finally:
        dd.rm_all()
        network = InstanceNetwork.of(d.root, d.base / "net.d")
        d.destroy()
        network.remove()


def mirrored_daemon(registry: Registry, extra_args: list[str]) -> Iterator[DaemonProcess]:
    """A narwhald with ``extra_args`` and the registry (busybox pushed) as docker.io's mirror, for a module
    fixture (``yield from``); when it closes, the instance is destroyed and nothing of it may be left on the
    host (``narwhald cleanup`` included)."""
    push(registry.host, "library/busybox")
    d = start_daemon(mirror_config(registry.host), extra_args=extra_args)
    try:
        yield d
    finally:
        network = InstanceNetwork.of(d.root, d.base / "net.d")
        d.destroy()
        bridges = tuple(network.docker_networks.bridges) if network.docker_networks else ()
        left = host_leftovers(d, bridges)
        network.remove()
        assert left == {}


def eventually(check: Callable[[], bool], timeout: float = 30.0, interval: float = 0.1) -> bool:
    """``lib.wait.wait_for`` answering True (it held) or False (``timeout`` passed): for ``assert eventually()``."""
    try:
        wait_for(check, timeout, interval=interval)
    except AssertionError:
        return False
    return True
