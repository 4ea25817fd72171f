"""Docker's ``-v`` strings (``HostConfig.Binds``) and the checks every mount request passes (moby's linux parser).

``[source:]destination[:mode]``: a source starting with "/" is a host path
(a bind), any other source names a volume, no source means an anonymous
volume.  Mode is a comma list of ``ro``/``rw``, ``z``/``Z`` (SELinux, ignored
here), ``nocopy`` (volumes), a propagation mode (binds) and the macOS
consistency words (accepted and ignored, as Docker on Linux does).
"""
from __future__ import annotations

import dataclasses
import posixpath

from pkg import errors
from pkg.docker.volumes.model import PROPAGATIONS, MountSpec, MountType

_LABEL_MODES = ("z", "Z")
_RW_MODES = ("rw", "ro")
_CONSISTENCY = ("consistent", "cached", "delegated")


def parse_bind(raw: str) -> MountSpec:
    """One ``-v`` string as a mount request, or InvalidArgument with Docker's message."""
    parts = raw.split(":")
    if not raw or len(parts) > 3 or any(p == "" for p in parts):
        raise errors.InvalidArgument(f"invalid volume specification: '{raw}'")
    source, mode = "", ""
    if len(parts) == 1:
        target = parts[0]
    elif len(parts) == 2:
        if _valid_mode(parts[1]):
            raise errors.InvalidArgument(f"invalid volume specification: '{raw}'")
        source, target = parts
    else:
        source, target, mode = parts
        if not _valid_mode(mode):
            raise errors.InvalidArgument(f"invalid mode: {mode}")
    words = mode.split(",") if mode else []
    kind = MountType.BIND if source.startswith("/") else MountType.VOLUME
    propagation = next((w for w in words if w in PROPAGATIONS), "")
    if kind is MountType.VOLUME and propagation:
        raise errors.InvalidArgument(f"invalid volume specification: '{raw}': invalid mount config for type "
                                     '"volume": field BindOptions must not be specified')
    if kind is MountType.BIND and "nocopy" in words:
        raise errors.InvalidArgument(f"invalid volume specification: '{raw}': invalid mount config for type "
                                     '"bind": field VolumeOptions must not be specified')
    spec = MountSpec(
        type=kind, target=target, source=source, read_only="ro" in words, propagation=propagation,
        no_copy="nocopy" in words, mode=mode, create_host_path=True,
    )
    return validate(spec)


def _valid_mode(mode: str) -> bool:
    """moby's ValidMountMode: at most one of each kind of word, every word known."""
    if not mode:
        return False
    counts = {"rw": 0, "label": 0, "propagation": 0, "copy": 0, "consistency": 0}
    for word in mode.split(","):
        if word in _RW_MODES:
            counts["rw"] += 1
        elif word in _LABEL_MODES:
            counts["label"] += 1
        elif word in PROPAGATIONS:
            counts["propagation"] += 1
        elif word == "nocopy":
            counts["copy"] += 1
        elif word in _CONSISTENCY:
            counts["consistency"] += 1
        else:
            return False
    return all(n <= 1 for n in counts.values())


def validate(spec: MountSpec) -> MountSpec:
    """Check a mount request (from -v, --mount or an image VOLUME); returns it with a cleaned target."""
    kind = spec.type.value
    if not spec.target:
        raise errors.InvalidArgument(f'invalid mount config for type "{kind}": field Target must not be empty')
    if not spec.target.startswith("/"):
        raise errors.InvalidArgument(
            f"invalid mount config for type \"{kind}\": invalid mount path: '{spec.target}' "
            "mount path must be absolute")
    if "\0" in spec.target or "\0" in spec.source:
        raise errors.InvalidArgument(f'invalid mount config for type "{kind}": path contains a NUL byte')
    target = posixpath.normpath(spec.target)
    if target == "/":
        raise errors.InvalidArgument("invalid specification: destination can't be '/'")
    if spec.propagation and spec.propagation not in PROPAGATIONS:
        raise errors.InvalidArgument(f"invalid propagation mode: {spec.propagation}")
    if spec.type is MountType.BIND:
        if not spec.source:
            raise errors.InvalidArgument('invalid mount config for type "bind": field Source must not be empty')
        if not spec.source.startswith("/"):
            raise errors.InvalidArgument(
                f"invalid mount config for type \"bind\": invalid mount path: '{spec.source}' "
                "mount path must be absolute")
        if spec.no_copy or spec.volume_options or spec.volume_labels:
            raise errors.InvalidArgument('invalid mount config for type "bind": field VolumeOptions must not be '
                                         "specified")
    elif spec.type is MountType.VOLUME:
        if spec.subpath and (spec.subpath.startswith("/") or "\0" in spec.subpath
                             or posixpath.normpath(spec.subpath).split("/")[0] == ".."):
            raise errors.InvalidArgument('invalid mount config for type "volume": subpath must be a relative path '
                                         "within the volume")
        if spec.read_only and not spec.source:
            raise errors.InvalidArgument('invalid mount config for type "volume": must not set ReadOnly mode when '
                                         "using anonymous volumes")
        if spec.propagation:
            raise errors.InvalidArgument('invalid mount config for type "volume": field BindOptions must not be '
                                         "specified")
    elif spec.type is MountType.TMPFS:
        if spec.source:
            raise errors.InvalidArgument('invalid mount config for type "tmpfs": field Source must not be specified')
        if spec.tmpfs_size < 0:
            raise errors.InvalidArgument(f'invalid mount config for type "tmpfs": invalid tmpfs size {spec.tmpfs_size}')
    else:  # pragma: no cover - the enum is closed
        raise errors.InvalidArgument(f"mount type unknown: {kind!r}")
    return dataclasses.replace(spec, target=target)
