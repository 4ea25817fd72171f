"""Typed image models shared by the image core, the runtime and both front ends."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ImageHealthcheck:
    """The image's HEALTHCHECK (config.Healthcheck): Test as Docker stores it, durations in ns (0 = unset)."""

    test: list[str] = field(default_factory=list)
    interval_ns: int = 0
    timeout_ns: int = 0
    start_period_ns: int = 0
    retries: int = 0


@dataclass(frozen=True)
class ImageConfig:
    """The runtime-relevant part of an OCI image config ("config" object)."""

    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    working_dir: str = ""
    user: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    exposed_ports: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    stop_signal: str = ""
    healthcheck: ImageHealthcheck | None = None


@dataclass(frozen=True)
class Image:
    """A local image.  ``id`` is the config digest (what Docker and CRI call the image ID)."""

    id: str
    repo_tags: list[str]
    repo_digests: list[str]
    size: int
    config: ImageConfig
    target: Descriptor  # the manifest (or index) the names point at
    diff_ids: list[str]
    chain_id: str  # chain ID of the top layer: the snapshot containers are prepared from
    snapshotter: str = "overlayfs"
    os: str = "linux"
    architecture: str = "amd64"
    created: str = ""
    pinned: bool = False


@dataclass(frozen=True)
class RegistryAuth:
    """Credentials for one pull or push (CRI AuthConfig, Docker X-Registry-Auth).

    ``registry_token`` is a ready bearer token; ``identity_token`` an OAuth2
    refresh token exchanged at the token realm; otherwise basic credentials.
    """

    username: str = ""
    password: str = ""
    identity_token: str = ""
    registry_token: str = ""
    server_address: str = ""

    @property
    def empty(self) -> bool:
        return not (self.username or self.password or self.identity_token or self.registry_token)


@dataclass(frozen=True)
class Progress:
    """One per-blob progress event of a pull or push (for progress bars and metrics).

    ``status`` is one of: "resolved", "waiting", "exists", "downloading",
    "downloaded", "extracting", "extracted", "uploading", "pushed", "done".
    """

    ref: str
    digest: str
    media_type: str
    status: str
    current: int = 0
    total: int = 0


@dataclass(frozen=True)
class Distribution:
    """What a registry serves for a reference (Docker's /distribution/{name}/json): the manifest or index
    descriptor and the platforms it holds, as (os, architecture, variant)."""

    descriptor: Descriptor
    platforms: list[tuple[str, str, str]]
