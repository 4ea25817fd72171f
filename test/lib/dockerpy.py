"""A narwhald for Docker-API clients (docker CLI, docker-py): docker.io is mirrored by a local registry.

The registry is seeded with hack/mkimage.py's busybox under the Docker Hub names the clients ask for,
so ``busybox``, ``alpine:3.10`` or ``hello-world`` resolve offline to the same small image.
"""
from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterable, Iterator
from typing import Any

import mkimage

from lib.cni_host import InstanceNetwork
from lib.daemon import DaemonProcess, start_daemon

# Docker Hub names (repository:tag under docker.io) that resolve to the busybox test image.
HUB_NAMES = (
    "library/busybox:latest",
    "library/busybox:buildroot-2014.02",
    "library/alpine:latest",
    "library/alpine:3.10",
    "library/alpine:3.3",
    "library/hello-world:latest",
)


def seed_registry(registry_host: str, names: Iterable[str] = HUB_NAMES) -> mkimage.Image:
    """Push one busybox image under every ``repo:tag`` of ``names``; returns it (its config digest is the ID)."""
    image = mkimage.build("busybox")
    client = mkimage.RegistryClient(registry_host)
    for name in names:
        repo, _, tag = name.rpartition(":")
        client.push_image(repo, tag, image)
    return image


def mirror_config(registry_host: str) -> str:
    return f"registry:\n  mirrors:\n    docker.io: ['http://{registry_host}']\n"


def start_docker_daemon(registry_host: str, extra_config: str = "") -> DaemonProcess:
    """A narwhald whose docker.io pulls go to ``registry_host``."""
    return start_daemon(config_yaml=mirror_config(registry_host) + extra_config)


def stop(daemon: DaemonProcess) -> str:
    """SIGTERM, then SIGKILL if narwhald is still there after 30 s; returns what went wrong ("" if nothing)."""
    try:
        code = daemon.stop()
    except subprocess.TimeoutExpired:
        daemon.kill9()
        return "narwhald did not exit within 30 s of SIGTERM (killed)"
    return f"narwhald exited with {code}" if code not in (0, None) else ""


def destroy(daemon: DaemonProcess) -> None:
    """Stop the daemon and remove what it made, host-global network state included (as conftest does)."""
    network = InstanceNetwork.of(daemon.root, daemon.base / "net.d")
    stop(daemon)
    daemon.destroy()
    network.remove()


@contextlib.contextmanager
def docker_daemon(registry_host: str, extra_config: str = "") -> Iterator[DaemonProcess]:
    daemon = start_docker_daemon(registry_host, extra_config)
    try:
        yield daemon
    finally:
        destroy(daemon)


def client(daemon: DaemonProcess, version: str | None = None) -> Any:
    """A docker-py DockerClient on the daemon's socket (close it when done)."""
    import docker

    return docker.DockerClient(base_url=f"unix://{daemon.docker_socket}", version=version, timeout=120)
