#!/usr/bin/env python3
"""Build small OCI images without internet, and push them to a registry.

* ``busybox``: Debian's static busybox with its applet links, /etc/passwd and
  /etc/group, a writable /tmp — a shell image for tests and for users.
* ``pause``: Debian's static catatonit run as ``catatonit -P`` (its pause mode),
  the infra image for pods that share a PID namespace.

Layers are built deterministically (fixed mtimes, sorted entries), so the same
inputs give the same digests.  Output goes to an OCI image layout directory,
or straight to a registry (``--push 127.0.0.1:5000/library/busybox:latest``).
``--docker-media`` writes Docker schema 2 media types instead of OCI's,
``--uncompressed`` plain tar layers instead of gzip.
``--filler-layers N --filler-mb M`` appends N layers of M MiB of random bytes
(for large, multi-layer pull tests).

Examples:
    hack/mkimage.py busybox --push 127.0.0.1:5000/library/busybox:latest
    hack/mkimage.py pause --oci-dir /tmp/pause-layout
"""
from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import tarfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

EPOCH = 946684800  # 2000-01-01: fixed mtime for reproducible layers
CREATED = "2000-01-01T00:00:00Z"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Blob:
    media_type: str
    data: bytes

    @property
    def digest(self) -> str:
        return sha256(self.data)

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": len(self.data), **extra}


@dataclass
class Image:
    """One platform's image: config, layers and manifest, all as blobs."""

    config: Blob
    layers: list[Blob]
    manifest: Blob
    diff_ids: list[str] = field(default_factory=list)

    def blobs(self) -> list[Blob]:
        return [*self.layers, self.config, self.manifest]


class LayerBuilder:
    """Accumulates tar entries and produces a layer (gzip or plain tar) with its diff ID."""

    def __init__(self) -> None:
        self._raw = io.BytesIO()
        self._tar = tarfile.open(fileobj=self._raw, mode="w", format=tarfile.PAX_FORMAT)
        self._dirs: set[str] = set()

    def _info(self, name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.mtime = kind, mode, EPOCH
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info

    def dir(self, name: str, mode: int = 0o755) -> None:
        parts = name.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            path = "/".join(parts[:i])
            if path and path not in self._dirs:
                self._dirs.add(path)
                self._tar.addfile(self._info(path, tarfile.DIRTYPE, mode if i == len(parts) else 0o755))

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        name = name.strip("/")
        if "/" in name:
            self.dir(name.rsplit("/", 1)[0])
        info = self._info(name, tarfile.REGTYPE, mode)
        info.size = len(data)
        self._tar.addfile(info, io.BytesIO(data))

    def symlink(self, name: str, target: str) -> None:
        name = name.strip("/")
        if "/" in name:
            self.dir(name.rsplit("/", 1)[0])
        info = self._info(name, tarfile.SYMTYPE, 0o777)
        info.linkname = target
        self._tar.addfile(info)

    def finish(self, media_type: str, compress: bool = True) -> tuple[Blob, str]:
        self._tar.close()
        raw = self._raw.getvalue()
        data = gzip.compress(raw, compresslevel=6, mtime=0) if compress else raw
        return Blob(media_type, data), sha256(raw)


def _busybox_layer(busybox: Path) -> LayerBuilder:
    layer = LayerBuilder()
    layer.file("bin/busybox", busybox.read_bytes(), 0o755)
    applets = subprocess.run([str(busybox), "--list-full"], check=True, capture_output=True, text=True)
    for path in sorted(set(applets.stdout.split())):
        if path != "bin/busybox":
            depth = path.count("/")
            layer.symlink(path, "../" * depth + "bin/busybox" if depth > 1 else "/bin/busybox")
    layer.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
    layer.file("etc/group", b"root:x:0:\nnogroup:x:65534:\n")
    layer.dir("tmp", 0o1777)
    layer.dir("root", 0o700)
    layer.dir("var")
    layer.dir("proc")
    layer.dir("sys")
    layer.dir("dev")
    return layer


def _pause_layer(catatonit: Path) -> LayerBuilder:
    layer = LayerBuilder()
    layer.file("catatonit", catatonit.read_bytes(), 0o755)
    layer.file("etc/passwd", b"root:x:0:0:root:/:/catatonit\n")
    layer.file("etc/group", b"root:x:0:\n")
    return layer


def _filler_layer(index: int, size: int) -> LayerBuilder:
    layer = LayerBuilder()
    # Seeded random bytes do not compress, so the layer is ~size bytes, and are reproducible.
    data = random.Random(f"narwhal-filler-{index}").randbytes(size)
    layer.file(f"filler/{index:03d}.bin", data)
    return layer


def build(
    kind: str,
    *,
    docker_media: bool = False,
    compress: bool = True,
    filler_layers: int = 0,
    filler_mb: int = 0,
    arch: str = "amd64",
    busybox: Path = Path("/bin/busybox"),
    catatonit: Path = Path("/usr/bin/catatonit"),
    labels: dict[str, str] | None = None,
) -> Image:
    if compress:
        layer_type = DOCKER_LAYER_GZIP if docker_media else OCI_LAYER_GZIP
    else:
        layer_type = DOCKER_LAYER if docker_media else OCI_LAYER
    if kind == "busybox":
        builders = [_busybox_layer(busybox)]
        container_config: dict[str, Any] = {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["sh"],
            "WorkingDir": "/",
        }
    elif kind == "pause":
        builders = [_pause_layer(catatonit)]
        container_config = {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Entrypoint": ["/catatonit", "-P"],
            "WorkingDir": "/",
        }
    else:
        raise SystemExit(f"unknown image kind {kind!r} (busybox or pause)")
    builders += [_filler_layer(i, filler_mb << 20) for i in range(filler_layers)]
    if labels:
        container_config["Labels"] = dict(labels)
    layers, diff_ids = [], []
    for builder in builders:
        blob, diff_id = builder.finish(layer_type, compress)
        layers.append(blob)
        diff_ids.append(diff_id)
    config = {
        "created": CREATED,
        "architecture": arch,
        "os": "linux",
        "config": container_config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": CREATED, "created_by": f"hack/mkimage.py {kind} layer {i}"}
                    for i in range(len(layers))],
    }
    config_blob = Blob(DOCKER_CONFIG if docker_media else OCI_CONFIG,
                       json.dumps(config, sort_keys=True, separators=(",", ":")).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST if docker_media else OCI_MANIFEST,
        "config": config_blob.descriptor(),
        "layers": [b.descriptor() for b in layers],
    }
    manifest_blob = Blob(manifest["mediaType"], json.dumps(manifest, indent=2).encode())
    return Image(config_blob, layers, manifest_blob, diff_ids)


def index_of(images: dict[str, Image], docker_media: bool = False) -> Blob:
    """A manifest list / OCI index over per-architecture images."""
    media = DOCKER_LIST if docker_media else OCI_INDEX
    manifests = [
        img.manifest.descriptor(platform={"architecture": arch, "os": "linux"}) for arch, img in images.items()
    ]
    return Blob(media, json.dumps({"schemaVersion": 2, "mediaType": media, "manifests": manifests}, indent=2).encode())


# ---- output ----
def write_oci_layout(directory: Path, image: Image, ref_name: str = "latest") -> None:
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    for blob in image.blobs():
        (blobs / blob.digest.split(":", 1)[1]).write_bytes(blob.data)
    (directory / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [image.manifest.descriptor(annotations={"org.opencontainers.image.ref.name": ref_name})],
    }
    (directory / "index.json").write_text(json.dumps(index, indent=2))


@dataclass
class Reference:
    registry: str
    repository: str
    tag: str

    @classmethod
    def parse(cls, ref: str) -> Reference:
        registry, _, rest = ref.partition("/")
        if not rest:
            raise SystemExit(f"push reference needs a registry host: {ref!r}")
        repository, _, tag = rest.rpartition(":") if ":" in rest.rsplit("/", 1)[-1] else (rest, "", "latest")
        return cls(registry, repository, tag)


class RegistryClient:
    """Just enough of the distribution API to push: blob upload and manifest put (plain HTTP)."""

    def __init__(self, registry: str, username: str | None = None, password: str | None = None) -> None:
        self.base = f"http://{registry}"
        self._auth = None
        if username is not None:
            token = base64.b64encode(f"{username}:{password or ''}".encode()).decode()
            self._auth = f"Basic {token}"

    def _request(self, method: str, url: str, data: bytes | None = None,
                 headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(url if url.startswith("http") else self.base + url, data=data, method=method)
        for key, value in (headers or {}).items():
            req.add_header(key, value)
        if self._auth:
            req.add_header("Authorization", self._auth)
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers), err.read()

    def has_blob(self, repo: str, digest: str) -> bool:
        return self._request("HEAD", f"/v2/{repo}/blobs/{digest}")[0] == 200

    def push_blob(self, repo: str, blob: Blob) -> None:
        if self.has_blob(repo, blob.digest):
            return
        status, headers, body = self._request("POST", f"/v2/{repo}/blobs/uploads/")
        if status != 202:
            raise RuntimeError(f"start upload: HTTP {status}: {body[:200]!r}")
        location = headers.get("Location") or headers["location"]
        if not location.startswith("http"):
            location = self.base + location
        sep = "&" if "?" in location else "?"
        url = f"{location}{sep}digest={urllib.parse.quote(blob.digest)}"
        status, _, body = self._request("PUT", url, blob.data, {"Content-Type": "application/octet-stream"})
        if status != 201:
            raise RuntimeError(f"upload {blob.digest}: HTTP {status}: {body[:200]!r}")

    def put_manifest(self, repo: str, reference: str, blob: Blob) -> None:
        status, _, body = self._request("PUT", f"/v2/{repo}/manifests/{reference}", blob.data,
                                        {"Content-Type": blob.media_type})
        if status != 201:
            raise RuntimeError(f"put manifest {repo}:{reference}: HTTP {status}: {body[:300]!r}")

    def push_image(self, repo: str, tag: str, image: Image) -> str:
        for blob in [*image.layers, image.config]:
            self.push_blob(repo, blob)
        self.put_manifest(repo, tag, image.manifest)
        return image.manifest.digest

    def push_index(self, repo: str, tag: str, images: dict[str, Image], index: Blob) -> str:
        for image in images.values():
            for blob in [*image.layers, image.config]:
                self.push_blob(repo, blob)
            self.put_manifest(repo, image.manifest.digest, image.manifest)
        self.put_manifest(repo, tag, index)
        return index.digest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("kind", choices=["busybox", "pause"])
    parser.add_argument("--push", metavar="HOST:PORT/REPO[:TAG]", help="push to this registry reference")
    parser.add_argument("--oci-dir", type=Path, help="write an OCI image layout here")
    parser.add_argument("--docker-media", action="store_true", help="Docker schema 2 media types instead of OCI")
    parser.add_argument("--uncompressed", action="store_true", help="plain tar layers instead of gzip")
    parser.add_argument("--multi-arch", action="store_true", help="push an index with amd64 and arm64 entries")
    parser.add_argument("--filler-layers", type=int, default=0)
    parser.add_argument("--filler-mb", type=int, default=0)
    parser.add_argument("--username")
    parser.add_argument("--password")
    args = parser.parse_args()
    image = build(args.kind, docker_media=args.docker_media, compress=not args.uncompressed,
                  filler_layers=args.filler_layers, filler_mb=args.filler_mb)
    if args.oci_dir:
        if args.oci_dir.exists():
            shutil.rmtree(args.oci_dir)
        write_oci_layout(args.oci_dir, image)
        print(f"wrote {args.oci_dir} ({image.manifest.digest})")
    if args.push:
        ref = Reference.parse(args.push)
        client = RegistryClient(ref.registry, args.username, args.password)
        if args.multi_arch:
            images = {"amd64": image, "arm64": build(args.kind, docker_media=args.docker_media, arch="arm64")}
            digest = client.push_index(ref.repository, ref.tag, images, index_of(images, args.docker_media))
        else:
            digest = client.push_image(ref.repository, ref.tag, image)
        print(f"pushed {args.push}@{digest}")
    if not args.push and not args.oci_dir:
        parser.error("give --push and/or --oci-dir")


if __name__ == "__main__":
    os.umask(0o022)
    main()
