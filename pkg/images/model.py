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
