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


def chain_ids(diff_ids: list[str]) -> list[str]:
    """OCI chain IDs of an image's layers: the snapshot names its unpack commits."""
    import hashlib

    chains: list[str] = []
    for diff_id in diff_ids:
        chains.append(diff_id if not chains else
                      "sha256:" + hashlib.sha256(f"{chains[-1]} {diff_id}".encode()).hexdigest())
    return chains


def unpacks(daemon: DaemonProcess) -> list[tuple[str, str]]:
    """Active ``extract-<id> <chain ID>`` snapshots (a layer being unpacked, or cut short): (key, chain ID)."""
    lines = ctr(daemon, "snapshots", "--snapshotter", "overlayfs", "ls").splitlines()[1:]
    return [(f"{parts[0]} {parts[1]}", parts[1]) for parts in (line.split() for line in lines)
            if len(parts) > 1 and parts[0].startswith("extract-")]


def slow_unpack_image(files: int, filler_mb: int) -> mkimage.Image:
    """busybox, then a small layer of ``files`` empty files (seconds to unpack, a fraction of one to fetch),
    then ``filler_mb`` MiB of random bytes (slow to fetch through a throttled proxy): a pull that is unpacking
    its second layer while its third is still being written."""
    import json

    base = mkimage.build("busybox", filler_layers=1, filler_mb=filler_mb)
    many = mkimage.LayerBuilder()
    for i in range(files):
        many.file(f"many/{i % 64:02d}/{i}", b"")
    layer, diff_id = many.finish(base.layers[0].media_type)
    layers = [base.layers[0], layer, base.layers[1]]
    diff_ids = [base.diff_ids[0], diff_id, base.diff_ids[1]]
    config = json.loads(base.config.data)
    config["rootfs"]["diff_ids"] = diff_ids
    config["history"].insert(1, {"created": mkimage.CREATED, "created_by": f"{files} empty files"})
    config_blob = mkimage.Blob(base.config.media_type, json.dumps(config, sort_keys=True).encode())
    manifest = json.loads(base.manifest.data)
    manifest["config"] = config_blob.descriptor()
    manifest["layers"] = [blob.descriptor() for blob in layers]
    manifest_blob = mkimage.Blob(base.manifest.media_type, json.dumps(manifest, indent=2).encode())
    return mkimage.Image(config_blob, layers, manifest_blob, diff_ids)
