"""Where a cgroup's files live: v1 hierarchies per controller, the unified (v2) tree, or both.

Three host layouts exist: legacy/hybrid v1 (a directory per hierarchy under
/sys/fs/cgroup, e.g. ``memory``, ``cpu,cpuacct`` with ``cpu``/``cpuacct``
links, ``systemd`` and, on hybrid hosts, ``unified`` with no controllers),
and pure v2 (/sys/fs/cgroup itself is the unified tree).  runc puts
containers in v1 controllers whenever v1 is mounted, so on a hybrid host the
stats come from v1 and only cleanup touches ``unified``.  The root is a
parameter so that tests can build fake trees in a temporary directory.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from pkg import errors

DEFAULT_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class Hierarchies:
    """The cgroup mounts of a host: v1 controller name → hierarchy root, and the unified root."""

    root: Path
    v1: dict[str, Path] = field(default_factory=dict)
    unified: Path | None = None

    @property
    def is_v2(self) -> bool:
        """Pure v2: controllers live in the unified tree."""
        return not self.v1 and self.unified is not None

    def controller(self, name: str, cgroup: str) -> Path | None:
        """The directory of ``cgroup`` for a controller (v1), or in the unified tree (v2); None if absent."""
        if self.is_v2:
            assert self.unified is not None
            return _join(self.unified, cgroup)
        base = self.v1.get(name)
        return None if base is None else _join(base, cgroup)

    def all_roots(self) -> list[Path]:
        """Every distinct hierarchy root (v1 ones and unified), for creating or removing a cgroup everywhere."""
        roots: list[Path] = []
        seen: set[Path] = set()
        for base in [*self.v1.values(), *([self.unified] if self.unified else [])]:
            real = base.resolve()
            if real not in seen:
                seen.add(real)
                roots.append(base)
        return roots


def _join(base: Path, cgroup: str) -> Path:
    """``base``/``cgroup``, normalised against "/" so that ".." can never climb out of the hierarchy."""
    rel = os.path.normpath("/" + cgroup).lstrip("/")
    return base / rel if rel else base


def detect(root: Path = DEFAULT_ROOT) -> Hierarchies:
    """Inspect ``root``: ``cgroup.controllers`` at the top means pure v2; otherwise each subdirectory is a hierarchy."""
    if (root / "cgroup.controllers").exists():
        return Hierarchies(root=root, unified=root)
    v1: dict[str, Path] = {}
    unified: Path | None = None
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except FileNotFoundError:
        raise errors.FailedPrecondition(f"no cgroup filesystem at {root}") from None
    for entry in entries:
        if not entry.is_dir():
            continue
        if entry.name == "unified":
            unified = Path(entry.path)
            continue
        # "cpu,cpuacct" serves both names; links named "cpu" and "cpuacct" resolve to the same place.
        for name in entry.name.split(","):
            v1.setdefault(name, Path(entry.path))
    if not v1 and unified is None:
        raise errors.FailedPrecondition(f"no cgroup hierarchies under {root}")
    return Hierarchies(root=root, v1=v1, unified=unified)


_default: Hierarchies | None = None


def host() -> Hierarchies:
    """The host's layout (detected once)."""
    global _default
    if _default is None:
        _default = detect()
    return _default


def cgroup_of_pid(pid: int, controller: str = "memory", proc: Path = Path("/proc")) -> str:
    """A process's cgroup path: the ``controller`` line on v1, the ``0::`` line on pure v2."""
    try:
        text = (proc / str(pid) / "cgroup").read_text()
    except FileNotFoundError:
        raise errors.NotFound(f"process {pid} not found") from None
    unified = None
    for line in text.splitlines():
        hid, controllers, path = line.split(":", 2)
        if hid == "0" and controllers == "":
            unified = path
        elif controller in controllers.split(","):
            return path
    if unified is not None:
        return unified
    raise errors.NotFound(f"process {pid} has no {controller} cgroup")
