"""Container resources → OCI ``linux.resources``, and the clamps this host needs.

Used at create and by UpdateContainerResources (the same conversion, so an
update means what a create means).  Zero means "not set", as in the CRI.
Clamps instead of failures where the host cannot grant what is asked but the
container can still run: oom_score_adj cannot go below narwhald's own (root
here lacks CAP_SYS_RESOURCE), rlimits cannot exceed narwhald's hard limits.
"""
from __future__ import annotations

import logging
import re
import resource
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pkg.errors import InvalidArgument
from pkg.model.spec import HugepageLimit as HugepageLimit  # re-exported: defined with the models
from pkg.model.spec import Resources as Resources
from pkg.model.spec import Rlimit as Rlimit

log = logging.getLogger(__name__)

_CPUSET = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*\Z", re.ASCII)
_PAGE_SIZE = re.compile(r"^\d+(B|KB|MB|GB|TB|PB)\Z", re.ASCII)
_CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class CgroupFacts:
    """What the host's cgroups offer (probe once; tests build their own)."""

    v2: bool = False
    swap: bool = True
    hugetlb: bool = True

    @classmethod
    def probe(cls, root: Path = _CGROUP_ROOT) -> CgroupFacts:
        if (root / "cgroup.controllers").exists():
            controllers = (root / "cgroup.controllers").read_text().split()
            swap = any(root.glob("*/memory.swap.max"))
            return cls(v2=True, swap=swap, hugetlb="hugetlb" in controllers)
        return cls(
            v2=False,
            swap=(root / "memory" / "memory.memsw.limit_in_bytes").exists(),
            hugetlb=(root / "hugetlb").is_dir(),
        )


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise InvalidArgument(message)


def validate(res: Resources) -> None:
    _check(res.cpu_period >= 0, f"cpu_period must not be negative: {res.cpu_period}")
    _check(res.cpu_period == 0 or 1000 <= res.cpu_period <= 1_000_000,
           f"cpu_period must be between 1000 and 1000000 microseconds: {res.cpu_period}")
    _check(res.cpu_quota == -1 or res.cpu_quota >= 0, f"cpu_quota must be -1 (unlimited) or >= 0: {res.cpu_quota}")
    _check(res.cpu_quota in (-1, 0) or res.cpu_quota >= 1000, f"cpu_quota must be at least 1000: {res.cpu_quota}")
    _check(res.cpu_shares >= 0, f"cpu_shares must not be negative: {res.cpu_shares}")
    _check(res.memory_limit_in_bytes >= 0, f"memory limit must not be negative: {res.memory_limit_in_bytes}")
    _check(res.memory_swap_limit_in_bytes >= -1,
           f"memory swap limit must be -1 (unlimited) or >= 0: {res.memory_swap_limit_in_bytes}")
    _check(res.memory_swap_limit_in_bytes <= 0 or res.memory_limit_in_bytes == 0
           or res.memory_swap_limit_in_bytes >= res.memory_limit_in_bytes,
           "memory swap limit (memory + swap) must not be below the memory limit")
    _check(res.pids_limit >= -1, f"pids limit must be -1 (unlimited) or >= 0: {res.pids_limit}")
    for name, value in (("cpuset_cpus", res.cpuset_cpus), ("cpuset_mems", res.cpuset_mems)):
        _check(value == "" or bool(_CPUSET.match(value)), f"{name} {value!r} is not a list like 0-3,5")
    for h in res.hugepage_limits:
        _check(bool(_PAGE_SIZE.match(h.page_size)), f"hugepage size {h.page_size!r} is not like 2MB or 1GB")
        _check(h.limit >= 0, f"hugepage limit must not be negative: {h.limit}")
    for key in res.unified:
        _check("/" not in key and "." in key and not key.startswith("."), f"unified key {key!r} is not a cgroup file")
    if res.oom_score_adj is not None:
        _check(-1000 <= res.oom_score_adj <= 1000, f"oom_score_adj must be in [-1000, 1000]: {res.oom_score_adj}")


def linux_resources(res: Resources, cgroups: CgroupFacts | None = None) -> dict[str, Any]:
    """The OCI ``linux.resources`` (without devices) for ``res``, as containerd's ``WithResources``."""
    validate(res)
    cgroups = cgroups or CgroupFacts.probe()
    out: dict[str, Any] = {}
    cpu: dict[str, Any] = {}
    if res.cpu_period:
        cpu["period"] = res.cpu_period
    if res.cpu_quota:
        cpu["quota"] = res.cpu_quota
    if res.cpu_shares:
        cpu["shares"] = res.cpu_shares
    if res.cpuset_cpus:
        cpu["cpus"] = res.cpuset_cpus
    if res.cpuset_mems:
        cpu["mems"] = res.cpuset_mems
    if cpu:
        out["cpu"] = cpu
    memory: dict[str, Any] = {}
    if res.memory_limit_in_bytes:
        memory["limit"] = res.memory_limit_in_bytes
        # Swap equal to the limit: no swapping unless asked, as containerd.
        if not res.memory_swap_limit_in_bytes and cgroups.swap:
            memory["swap"] = res.memory_limit_in_bytes
    if res.memory_swap_limit_in_bytes and cgroups.swap:
        memory["swap"] = res.memory_swap_limit_in_bytes
    if memory:
        out["memory"] = memory
    if res.hugepage_limits:
        if cgroups.hugetlb:
            out["hugepageLimits"] = [{"pageSize": h.page_size, "limit": h.limit} for h in res.hugepage_limits]
        else:  # containerd's default tolerate_missing_hugetlb_controller
            log.warning("hugetlb cgroup controller is absent; hugepage limits skipped")
    if res.pids_limit:
        out["pids"] = {"limit": res.pids_limit}
    if res.unified:
        if not cgroups.v2:
            raise InvalidArgument("unified cgroup resources need cgroup v2; this host runs cgroup v1")
        out["unified"] = dict(res.unified)
    return out


def merge_resources(current: Mapping[str, Any], res: Resources, cgroups: CgroupFacts | None = None) -> dict[str, Any]:
    """``linux.resources`` of a running container after an update (containerd's ``updateOCIResource``).

    Fields the update sets replace the current ones, one by one; everything
    else — device rules above all — is kept, so the stored spec stays whole.
    """
    update = linux_resources(res, cgroups)
    merged: dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in current.items()}
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key].update(value)
        else:
            merged[key] = value
    return merged


def current_oom_score_adj(path: Path = Path("/proc/self/oom_score_adj")) -> int:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return -1000


def clamp_oom_score_adj(value: int, floor: int | None = None) -> int:
    """``value`` raised to narwhald's own score where it is lower (containerd's restrict_oom_score_adj)."""
    _check(-1000 <= value <= 1000, f"oom_score_adj must be in [-1000, 1000]: {value}")
    floor = current_oom_score_adj() if floor is None else floor
    return max(value, floor)


_RLIMITS = {
    "RLIMIT_AS", "RLIMIT_CORE", "RLIMIT_CPU", "RLIMIT_DATA", "RLIMIT_FSIZE", "RLIMIT_LOCKS", "RLIMIT_MEMLOCK",
    "RLIMIT_MSGQUEUE", "RLIMIT_NICE", "RLIMIT_NOFILE", "RLIMIT_NPROC", "RLIMIT_RSS", "RLIMIT_RTPRIO",
    "RLIMIT_RTTIME", "RLIMIT_SIGPENDING", "RLIMIT_STACK",
}
_INFINITY = 2**64 - 1


def _host_hard(name: str) -> int:
    number = getattr(resource, name, None)
    if number is None:
        return _INFINITY
    hard = resource.getrlimit(number)[1]
    return _INFINITY if hard == resource.RLIM_INFINITY else hard


def clamp_rlimits(limits: Iterable[Rlimit], host_hard: Mapping[str, int] | None = None) -> list[dict[str, Any]]:
    """OCI ``process.rlimits``: names normalised, -1 = unlimited, hard limits clamped to narwhald's own."""
    out: dict[str, dict[str, Any]] = {}
    for lim in limits:
        name = lim.type.upper()
        name = name if name.startswith("RLIMIT_") else "RLIMIT_" + name
        _check(name in _RLIMITS, f"unknown rlimit {lim.type!r}")
        soft = _INFINITY if lim.soft == -1 else lim.soft
        hard = _INFINITY if lim.hard == -1 else lim.hard
        _check(0 <= soft <= _INFINITY and 0 <= hard <= _INFINITY, f"rlimit {lim.type} values out of range")
        _check(soft <= hard, f"rlimit {lim.type}: soft limit {lim.soft} is above the hard limit {lim.hard}")
        ceiling = host_hard[name] if host_hard is not None and name in host_hard else _host_hard(name)
        if hard > ceiling:
            log.info("rlimit %s hard %d clamped to narwhald's %d", name, hard, ceiling)
            hard = ceiling
            soft = min(soft, hard)
        out[name] = {"type": name, "hard": hard, "soft": soft}
    return list(out.values())


def cgroups_path(parent: str, container_id: str) -> str:
    """``/<parent>/<id>`` for the cgroupfs driver (containerd's ``getCgroupsPath``)."""
    _check(bool(container_id) and "/" not in container_id, f"invalid cgroup leaf {container_id!r}")
    parts = [p for p in parent.split("/") if p]
    _check(all(p not in (".", "..") for p in parts), f"cgroup parent {parent!r} must not contain . or ..")
    return "/" + "/".join([*parts, container_id])
