"""A narwhald for Docker-API clients (docker CLI, docker-py): docker.io is mirrored by a local registry.

The registry is seeded with hack/mkimage.py's busybox under the Docker Hub names the clients ask for,
so ``busybox``, ``alpine:3.10`` or ``hello-world`` resolve offline to the same small image.
"""
from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterable, Iterator
from typing import Any

import mkimage

from lib.cni_host import InstanceNetwork
from lib.daemon import DaemonProcess, start_daemon
from lib.docker import mirror_config

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
    """Push busybox under every ``repo:tag`` of ``names`` (alpine names get the alpine-like variant);
    returns the plain busybox image (its config digest is the ID)."""
    image = mkimage.build("busybox")
    alpine = alpine_like(image)
    client = mkimage.RegistryClient(registry_host)
    for name in names:
        repo, _, tag = name.rpartition(":")
        client.push_image(repo, tag, alpine if repo.endswith("/alpine") else image)
    return image


def alpine_like(base: mkimage.Image) -> mkimage.Image:
    """busybox plus the bits of alpine's filesystem docker-py's suite relies on: its system users
    (``postgres``, uid 70) and directories (/var/opt), in one more layer."""
    layer = mkimage.LayerBuilder()
    layer.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/sbin/nologin\n"
                             b"postgres:x:70:70::/var/lib/postgresql:/bin/sh\n")
    layer.file("etc/group", b"root:x:0:root\nnogroup:x:65533:\nnobody:x:65534:\npostgres:x:70:\n")
    layer.dir("var/opt")
    layer.dir("var/lib/postgresql")
    blob, diff_id = layer.finish(base.layers[0].media_type)
    config = json.loads(base.config.data)
    config["rootfs"]["diff_ids"].append(diff_id)
    config["history"].append({"created": config["history"][-1]["created"], "created_by": "alpine-like users"})
    config_blob = mkimage.Blob(base.config.media_type, json.dumps(config, sort_keys=True).encode())
    manifest = json.loads(base.manifest.data)
    manifest["config"] = config_blob.descriptor()
    manifest["layers"].append(blob.descriptor())
    manifest_blob = mkimage.Blob(base.manifest.media_type, json.dumps(manifest, indent=2).encode())
    return mkimage.Image(config_blob, [*base.layers, blob], manifest_blob, [*base.diff_ids, diff_id])


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


def busybox_session(daemon: DaemonProcess) -> Iterator[Any]:
    """A docker-py client with busybox pulled; on close every container is removed and unused networks pruned.

    For fixtures: ``yield from dockerpy.busybox_session(daemon)``."""
    c = client(daemon)
    try:
        c.images.pull("busybox", tag="latest")
        yield c
        for container in c.containers.list(all=True):
            container.remove(force=True)
        c.networks.prune()
    finally:
        c.close()


class TcpForward:
    """127.0.0.1:<port> forwarded byte for byte to a unix socket (the daemon's Docker socket), half-closes
    included: for clients that need a TCP ``DOCKER_HOST`` (docker-py's websocket attach builds a ``ws://``
    URL only from an http one)."""

    def __init__(self, unix_path: str) -> None:
        import socket
        import threading

        self._unix_path = unix_path
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._threading = threading
        self._thread = threading.Thread(target=self._accept, name="tcp-forward", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        import socket

        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            upstream = socket.socket(socket.AF_UNIX)
            try:
                upstream.connect(self._unix_path)
            except OSError:
                client.close()
                upstream.close()
                continue
            self._threading.Thread(target=self._serve, args=(client, upstream), daemon=True).start()

    def _serve(self, client: Any, upstream: Any) -> None:
        back = self._threading.Thread(target=self._pump, args=(upstream, client), daemon=True)
        back.start()
        self._pump(client, upstream)
        back.join()
        client.close()
        upstream.close()

    @staticmethod
    def _pump(src: Any, dst: Any) -> None:
        import socket

        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)
            with contextlib.suppress(OSError):
                src.shutdown(socket.SHUT_RD)

    def close(self) -> None:
        self._listener.close()
