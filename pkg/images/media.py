"""Media types and the parsing of manifests, indexes and image configs (OCI and Docker schema 2)."""
from __future__ import annotations

import hashlib
import json
import platform as _platform
from dataclasses import dataclass
from typing import Any

from pkg.errors import InvalidArgument, NotFound
from pkg.images.model import Descriptor, ImageConfig, ImageHealthcheck

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

MANIFESTS = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEXES = (OCI_INDEX, DOCKER_LIST)
LAYERS = (OCI_LAYER, OCI_LAYER_GZIP, OCI_LAYER_ZSTD, DOCKER_LAYER, DOCKER_LAYER_GZIP, DOCKER_FOREIGN_LAYER,
          "application/vnd.oci.image.layer.nondistributable.v1.tar",
          "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip")
ACCEPT = ", ".join((*MANIFESTS, *INDEXES))

# containerd's GC labels: content -> content and content -> snapshot references.
LABEL_GC_CONTENT = "containerd.io/gc.ref.content"
LABEL_GC_SNAPSHOT = "containerd.io/gc.ref.snapshot"
LABEL_UNCOMPRESSED = "containerd.io/uncompressed"
LABEL_DISTRIBUTION_SOURCE = "containerd.io/distribution.source"
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
ANNOTATION_IMAGE_NAME = "io.containerd.image.name"

MAX_MANIFEST = 4 << 20  # registries cap manifests at 4 MiB


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def host_platform() -> tuple[str, str, str]:
    """(os, architecture, variant) in OCI terms for this machine."""
    machine = _platform.machine().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
            "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x"}.get(machine, machine)
    variant = {"arm64": "v8", "arm": "v7"}.get(arch, "")
    return "linux", arch, variant


def parse_platform(value: str) -> tuple[str, str, str]:
    """"linux/arm64/v8" -> ("linux", "arm64", "v8"); the OS may be left out ("arm64")."""
    parts = value.strip().lower().split("/")
    if len(parts) == 1:
        parts = ["linux", *parts]
    if not 2 <= len(parts) <= 3 or not all(p and p.replace("_", "").isalnum() for p in parts):
        raise InvalidArgument(f"invalid platform {value!r}: expected os/arch[/variant]")
    return parts[0], parts[1], parts[2] if len(parts) == 3 else ""


def _json(data: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"{what}: not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidArgument(f"{what}: expected a JSON object")
    return doc


def descriptor(raw: Any, what: str) -> Descriptor:
    if not isinstance(raw, dict) or not isinstance(raw.get("digest"), str) or not isinstance(raw.get("size"), int):
        raise InvalidArgument(f"{what}: malformed descriptor {raw!r}")
    annotations = raw.get("annotations") or {}
    return Descriptor(media_type=str(raw.get("mediaType", "")), digest=raw["digest"], size=raw["size"],
                      annotations={str(k): str(v) for k, v in annotations.items()})


def descriptor_json(desc: Descriptor, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"mediaType": desc.media_type, "digest": desc.digest, "size": desc.size}
    if desc.annotations:
        out["annotations"] = dict(desc.annotations)
    out.update(extra)
    return out


def media_type_of(data: bytes, declared: str = "") -> str:
    """The manifest's own mediaType, else the declared one, else guessed from its shape."""
    doc = _json(data, "manifest")
    media = doc.get("mediaType") or declared
    if media in (*MANIFESTS, *INDEXES):
        return str(media)
    if "manifests" in doc:
        return OCI_INDEX
    if "config" in doc and "layers" in doc:
        return OCI_MANIFEST
    if doc.get("schemaVersion") == 1:
        raise InvalidArgument("Docker schema 1 manifests are not supported")
    raise InvalidArgument(f"unsupported manifest media type {media!r}")


@dataclass(frozen=True)
class Manifest:
    media_type: str
    config: Descriptor
    layers: list[Descriptor]


@dataclass(frozen=True)
class IndexEntry:
    descriptor: Descriptor
    os: str
    architecture: str
    variant: str


def parse_manifest(data: bytes, media_type: str = "") -> Manifest:
    doc = _json(data, "manifest")
    media = doc.get("mediaType") or media_type or OCI_MANIFEST
    if "config" not in doc or not isinstance(doc.get("layers"), list):
        raise InvalidArgument("manifest has no config or layers")
    config = descriptor(doc["config"], "manifest config")
    layers = [descriptor(layer, "manifest layer") for layer in doc["layers"]]
    for layer in layers:
        if layer.media_type not in LAYERS:
            raise InvalidArgument(f"unsupported layer media type {layer.media_type!r}")
    return Manifest(str(media), config, layers)


def parse_index(data: bytes) -> list[IndexEntry]:
    doc = _json(data, "index")
    if not isinstance(doc.get("manifests"), list):
        raise InvalidArgument("index has no manifests")
    out = []
    for raw in doc["manifests"]:
        plat = raw.get("platform") or {} if isinstance(raw, dict) else {}
        out.append(IndexEntry(descriptor(raw, "index entry"), str(plat.get("os", "")),
                              str(plat.get("architecture", "")), str(plat.get("variant", ""))))
    return out


def select_platform(entries: list[IndexEntry], os: str = "", arch: str = "", variant: str = "") -> Descriptor:
    """The entry for (os, arch[, variant]) — the host's by default; entries without a platform last."""
    host_os, host_arch, host_variant = host_platform()
    os, arch = os or host_os, arch or host_arch
    variant = variant or (host_variant if arch == host_arch else "")
    candidates = [e for e in entries if e.descriptor.media_type in (*MANIFESTS, "")
                  and e.os == os and e.architecture == arch]
    for entry in candidates:
        if not variant or not entry.variant or entry.variant == variant:
            return entry.descriptor
    untagged = [e for e in entries if not e.os and not e.architecture and e.descriptor.media_type in MANIFESTS]
    if untagged:
        return untagged[0].descriptor
    available = ", ".join(sorted({f"{e.os}/{e.architecture}" + (f"/{e.variant}" if e.variant else "")
                                  for e in entries})) or "none"
    raise NotFound(f"no matching manifest for {os}/{arch} in the manifest list (available: {available})")


@dataclass(frozen=True)
class ParsedConfig:
    config: ImageConfig
    diff_ids: list[str]
    os: str
    architecture: str
    created: str
    variant: str = ""


def parse_config(data: bytes) -> ParsedConfig:
    doc = _json(data, "image config")
    rootfs = doc.get("rootfs") or {}
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) for d in diff_ids):
        raise InvalidArgument("image config has no rootfs.diff_ids")
    cfg = doc.get("config") or {}
    if not isinstance(cfg, dict):
        cfg = {}

    def strings(key: str) -> list[str]:
        value = cfg.get(key) or []
        return [str(v) for v in value] if isinstance(value, list) else [str(value)]

    config = ImageConfig(
        entrypoint=strings("Entrypoint"),
        cmd=strings("Cmd"),
        env=strings("Env"),
        working_dir=str(cfg.get("WorkingDir") or ""),
        user=str(cfg.get("User") or ""),
        labels={str(k): str(v) for k, v in (cfg.get("Labels") or {}).items()},
        exposed_ports=sorted(str(p) for p in (cfg.get("ExposedPorts") or {})),
        volumes=sorted(str(v) for v in (cfg.get("Volumes") or {})),
        stop_signal=str(cfg.get("StopSignal") or ""),
        healthcheck=_healthcheck(cfg.get("Healthcheck")),
    )
    return ParsedConfig(config, list(diff_ids), str(doc.get("os") or "linux"),
                        str(doc.get("architecture") or "amd64"), str(doc.get("created") or ""),
                        str(doc.get("variant") or ""))


_DOCKER_LAYER_OF = {OCI_LAYER: DOCKER_LAYER, OCI_LAYER_GZIP: DOCKER_LAYER_GZIP}


def docker_layer_type(media_type: str) -> str:
    """The Docker schema 2 name of an OCI layer type (tar, tar+gzip); others are returned unchanged."""
    return _DOCKER_LAYER_OF.get(media_type, media_type)


def _healthcheck(raw: Any) -> ImageHealthcheck | None:
    if not isinstance(raw, dict):
        return None

    def ns(key: str) -> int:
        value = raw.get(key)
        return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0

    test = raw.get("Test")
    return ImageHealthcheck([str(t) for t in test] if isinstance(test, list) else [], ns("Interval"), ns("Timeout"),
                            ns("StartPeriod"), ns("Retries"))


def is_gzip_layer(media_type: str) -> bool:
    return media_type.endswith("gzip")
