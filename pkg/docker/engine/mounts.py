"""A Docker container's mounts: -v strings, --mount entries and --tmpfs resolved into the core's mounts.

Named and anonymous volumes (and the image's VOLUMEs) come from pkg.docker.volumes, which keeps them in use from
prepare until the container is removed; binds and tmpfs need nothing from it.
"""
from __future__ import annotations

import dataclasses
import posixpath
from collections.abc import Sequence
from pathlib import Path

from pkg import errors
from pkg.docker.engine.model import HostConfig
from pkg.docker.volumes import binds
from pkg.docker.volumes.model import MountPlan, MountPoint, MountSpec, MountType
from pkg.docker.volumes.service import VolumeService, check_subpath
from pkg.images.model import Image
from pkg.model.container import Mount


def specs(host: HostConfig) -> list[MountSpec]:
    """Every mount the container asks for, validated (Docker's messages)."""
    out = [binds.parse_bind(raw) for raw in host.binds]
    if host.volume_driver:  # moby: HostConfig.VolumeDriver is the driver of the -v volumes
        out = [dataclasses.replace(m, volume_driver=host.volume_driver) if m.type is MountType.VOLUME else m
               for m in out]
    out += [binds.validate(m) for m in host.mounts]
    for target, options in host.tmpfs.items():
        out.append(binds.validate(_tmpfs(target, options)))
    targets = [m.target for m in out]
    for target in targets:
        if targets.count(target) > 1:
            raise errors.InvalidArgument(f"Duplicate mount point: {target}")
    return out


def parse_volumes_from(entry: str) -> tuple[str, bool]:
    """``container[:mode]`` -> (container, read-write); the mode is moby's: ro, rw, plus SELinux/propagation
    flags accepted and ignored.  An unset mode keeps each inherited mount's own RW."""
    if not entry:
        raise errors.InvalidArgument("volume-from specification cannot be an empty string")
    name, _, mode = entry.partition(":")
    flags = [f for f in mode.split(",") if f] if mode else []
    if not name or any(f not in ("ro", "rw", "z", "Z", "nocopy", *_PROPAGATIONS) for f in flags) or (
            "ro" in flags and "rw" in flags):
        raise errors.InvalidArgument(f"invalid mode: {mode}")
    return name, "ro" not in flags


_PROPAGATIONS = ("private", "rprivate", "shared", "rshared", "slave", "rslave")


def inherited(own: Sequence[MountSpec], points: Sequence[MountPoint], read_write: bool) -> list[MountSpec]:
    """--volumes-from: another container's volumes and binds at the same paths (as moby: not its tmpfs, no
    copy-up), except where the container mounts something of its own."""
    taken = {m.target for m in own}
    out = []
    for point in points:
        if point.destination in taken or point.type is MountType.TMPFS:
            continue
        taken.add(point.destination)
        rw = point.rw and read_write
        if point.type is MountType.VOLUME:
            out.append(MountSpec(type=MountType.VOLUME, target=point.destination, source=point.name,
                                 read_only=not rw, no_copy=True, volume_driver=point.driver or "local"))
        else:
            out.append(MountSpec(type=MountType.BIND, target=point.destination, source=point.source,
                                 read_only=not rw, propagation=point.propagation))
    return out


def _tmpfs(target: str, options: str) -> MountSpec:
    size, mode, read_only = 0, 0, False
    for option in filter(None, options.split(",")):
        key, _, value = option.partition("=")
        if key == "size":
            size = _size(value)
        elif key == "mode":
            try:
                mode = int(value, 8)
            except ValueError:
                raise errors.InvalidArgument(f"invalid tmpfs mode {value!r}") from None
        elif key == "ro":
            read_only = True
    return MountSpec(type=MountType.TMPFS, target=target, read_only=read_only, tmpfs_size=size, tmpfs_mode=mode,
                     mode=options)


def _size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    suffix = text[-1:].lower()
    try:
        return int(text[:-1]) * units[suffix] if suffix in units else int(text)
    except ValueError:
        raise errors.InvalidArgument(f"invalid tmpfs size {text!r}") from None


async def prepare(volumes: VolumeService | None, requested: Sequence[MountSpec], image: Image,
                  volume_paths: Sequence[str] = ()) -> MountPlan:
    """The mount plan; without a volume service only binds and tmpfs are possible.  ``volume_paths``: the
    container's Config.Volumes (``docker run -v /path``), which get anonymous volumes like the image's."""
    if volumes is not None:
        return await volumes.prepare(requested, image, volume_paths)
    points = []
    for spec in requested:
        if spec.type is MountType.VOLUME:
            raise errors.NotImplementedYet("volumes are not available in this daemon")
        points.append(MountPoint(type=spec.type, destination=spec.target, source=spec.source, mode=spec.mode,
                                 rw=not spec.read_only, propagation=spec.propagation,
                                 tmpfs_size=spec.tmpfs_size, tmpfs_mode=spec.tmpfs_mode))
    return MountPlan(mounts=points, token="")


def check_subpaths(points: Sequence[MountPoint]) -> None:
    """Before a start: every volume subpath exists and stays inside its volume (moby checks at start, when
    the volume may have been filled since create).  Blocking."""
    for point in points:
        if point.type is MountType.VOLUME and point.subpath:
            root = Path(point.source)
            for _ in Path(posixpath.normpath(point.subpath)).parts:
                root = root.parent
            check_subpath(root, point.subpath)


def core_mounts(points: Sequence[MountPoint]) -> list[Mount]:
    out = []
    for point in points:
        mount = point.runtime_mount()
        if mount is None:  # tmpfs
            mount = Mount(container_path=point.destination, host_path="", readonly=not point.rw, tmpfs=True,
                          tmpfs_size=point.tmpfs_size, tmpfs_mode=point.tmpfs_mode)
        out.append(mount)
    return out
