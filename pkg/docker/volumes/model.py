"""Typed volume models: a volume, what a container asks to mount, and the mount it gets.

``MountSpec`` is the parsed form of a Docker ``-v``/``Binds`` string, a
``HostConfig.Mounts`` entry or an image ``VOLUME``; ``MountPoint`` is what
the volume service resolved it to (a host path), which is both what the
container's spec bind-mounts and what ``docker inspect`` lists under Mounts.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

from pkg.runtime.spec_options import Mount, Propagation

LOCAL_DRIVER = "local"
# Set on volumes created without a name (moby's AnonymousLabel): prune removes only these unless all=true.
ANONYMOUS_LABEL = "com.docker.volume.anonymous"


class MountType(enum.StrEnum):
    VOLUME = "volume"
    BIND = "bind"
    TMPFS = "tmpfs"


# Docker's propagation modes; "" means the default (rprivate for binds, none for volumes).
PROPAGATIONS = ("private", "rprivate", "shared", "rshared", "slave", "rslave")


@dataclass(frozen=True)
class Volume:
    name: str
    mountpoint: str  # the host dir containers bind-mount (<root>/volumes/<name>/_data)
    created_at: str  # RFC 3339, UTC
    driver: str = LOCAL_DRIVER
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    scope: str = "local"

    @property
    def anonymous(self) -> bool:
        return ANONYMOUS_LABEL in self.labels


@dataclass(frozen=True)
class VolumeUsage:
    """``docker system df -v``: bytes used (-1 when not measured, e.g. a mounted device) and containers using it."""

    size: int
    ref_count: int


@dataclass(frozen=True)
class VolumeFilter:
    """``GET /volumes`` and prune filters; every given criterion must hold."""

    names: tuple[str, ...] = ()  # each an exact name or a regular expression (moby's filters.Match)
    drivers: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()  # "key" or "key=value"; all must match
    not_labels: tuple[str, ...] = ()  # "label!": none may match
    dangling: bool | None = None  # True: unused volumes only; False: used ones only


@dataclass(frozen=True)
class MountSpec:
    """One mount a container asks for.

    ``source`` is a volume name ("" = a new anonymous volume), a host path
    for binds, and empty for tmpfs.
    """

    type: MountType
    target: str
    source: str = ""
    read_only: bool = False
    propagation: str = ""
    no_copy: bool = False  # volumes: do not seed an empty volume with the image's content
    mode: str = ""  # the mode field of a -v spec as given ("ro,z"), shown by inspect
    create_host_path: bool = False  # -v binds create a missing host dir; --mount binds refuse it
    volume_driver: str = LOCAL_DRIVER
    volume_labels: dict[str, str] = field(default_factory=dict)
    volume_options: dict[str, str] = field(default_factory=dict)
    tmpfs_size: int = 0  # bytes; 0 = the kernel default
    tmpfs_mode: int = 0  # 0 = the kernel default (1777)
    subpath: str = ""  # volumes (API 1.45): mount this directory of the volume instead of its root


@dataclass(frozen=True)
class MountPoint:
    """A resolved mount: inspect's ``Mounts`` entry, and the bind (or tmpfs) the container's spec gets."""

    type: MountType
    destination: str
    source: str = ""  # host path; "" for tmpfs
    name: str = ""  # volume name
    driver: str = ""
    mode: str = ""
    rw: bool = True
    propagation: str = ""
    anonymous: bool = False  # a volume made for this container (removed by ``docker rm -v``)
    tmpfs_size: int = 0
    tmpfs_mode: int = 0
    subpath: str = ""  # the volume's directory mounted (``source`` is the volume root joined with it)

    def runtime_mount(self) -> Mount | None:
        """The core's bind mount for this entry (None for tmpfs, which is not a host path)."""
        if self.type is MountType.TMPFS:
            return None
        prop = self.propagation.removeprefix("r")
        propagation = {"shared": Propagation.BIDIRECTIONAL, "slave": Propagation.HOST_TO_CONTAINER}.get(
            prop, Propagation.PRIVATE)
        return Mount(container_path=self.destination, host_path=self.source, readonly=not self.rw,
                     propagation=propagation)


@dataclass
class MountPlan:
    """What ``VolumeService.prepare`` resolved for one container; hand it to ``attach`` or ``discard``."""

    mounts: list[MountPoint]
    token: str  # the provisional reference holding the volumes until attach/discard
    created: list[str] = field(default_factory=list)  # anonymous volumes made by this prepare

    def runtime_mounts(self) -> list[Mount]:
        return [m for m in (p.runtime_mount() for p in self.mounts) if m is not None]
