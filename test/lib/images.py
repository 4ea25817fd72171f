"""Helpers for image tests: push hack/mkimage.py images to a test registry, look inside containerd."""
from __future__ import annotations

import subprocess
from pathlib import Path

import mkimage

from lib.daemon import DaemonProcess


def push(registry_host: str, repo: str, tag: str = "latest", *, kind: str = "busybox",
         username: str | None = None, password: str | None = None, **build: object) -> mkimage.Image:
    """Build an image with hack/mkimage.py and push it as ``registry_host/repo:tag``."""
    image = mkimage.build(kind, **build)
    mkimage.RegistryClient(registry_host, username, password).push_image(repo, tag, image)
    return image


def ctr(daemon: DaemonProcess, *args: str) -> str:
    """Run ``ctr`` against the daemon's own containerd, in its namespace."""
    sock = daemon.state / "containerd" / "containerd.sock"
    out = subprocess.run(["ctr", "-a", str(sock), "-n", "narwhal", *args], check=True, capture_output=True,
                         text=True, timeout=60)
    return out.stdout


def snapshots(daemon: DaemonProcess) -> set[str]:
    lines = ctr(daemon, "snapshots", "--snapshotter", "overlayfs", "ls").splitlines()[1:]
    return {line.split()[0] for line in lines if line.strip()}


def content(daemon: DaemonProcess) -> set[str]:
    lines = ctr(daemon, "content", "ls", "-q").splitlines()
    return {line.strip() for line in lines if line.strip()}


def leases(daemon: DaemonProcess) -> set[str]:
    lines = ctr(daemon, "leases", "ls", "-q").splitlines()
    return {line.strip() for line in lines if line.strip()}


def registry_blob_path(registry_base: Path, digest: str) -> Path:
    hexd = digest.split(":", 1)[1]
    return registry_base / "data" / "docker" / "registry" / "v2" / "blobs" / "sha256" / hexd[:2] / hexd / "data"


def with_user(image: mkimage.Image, user: str) -> mkimage.Image:
    """The same image with ``config.User`` set (a new config, hence a new image ID and manifest)."""
    import json

    config = json.loads(image.config.data)
    config["config"]["User"] = user
    config_blob = mkimage.Blob(image.config.media_type, json.dumps(config, sort_keys=True).encode())
    manifest = json.loads(image.manifest.data)
    manifest["config"] = config_blob.descriptor()
    manifest_blob = mkimage.Blob(image.manifest.media_type, json.dumps(manifest, indent=2).encode())
    return mkimage.Image(config_blob, image.layers, manifest_blob, image.diff_ids)


def push_built(registry_host: str, repo: str, tag: str, image: mkimage.Image) -> str:
    return mkimage.RegistryClient(registry_host).push_image(repo, tag, image)


# The image kinds every image path is tested with: OCI and Docker schema 2 media types, gzip and plain tar
# layers.  Each gets its own label, so the four have four configs (four image IDs) and none is found as another.
IMAGE_KINDS: dict[str, dict[str, object]] = {
    "oci-gzip": {},
    "oci-tar": {"compress": False},
    "v2s2-gzip": {"docker_media": True},
    "v2s2-tar": {"docker_media": True, "compress": False},
}


def push_kind(registry_host: str, repo: str, kind: str, tag: str = "latest") -> mkimage.Image:
    """A busybox image of one of IMAGE_KINDS pushed as ``registry_host/repo:tag``."""
    return push(registry_host, repo, tag, labels={"narwhal.test.kind": kind}, **IMAGE_KINDS[kind])


def is_docker_media(media_type: str) -> bool:
    return media_type.startswith("application/vnd.docker.")
