"""Container and pod stats read straight from cgroup files (v1 and v2).

The figures follow containerd's CRI plugin: working set is usage minus
inactive file pages (the kubelet's eviction signal), rss is v1 ``total_rss``
or v2 ``anon``, available bytes are limit minus working set when a limit is
set.  CPU usage in nano-cores needs two samples: ``CpuUsageTracker`` keeps
the previous one per container.  Reads are a handful of small sysfs files;
``read_stats_many`` batches them into one worker thread for list calls.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from pkg import errors
from pkg.cgroups.fs import Hierarchies, host

# v1 reports "no limit" as LONG_MAX rounded down to the page size; anything this large is unlimited.
_UNLIMITED = 1 << 62
_USER_HZ_NS = 10_000_000  # cpuacct.stat counts USER_HZ (100) ticks


@dataclass(frozen=True)
class CpuStats:
    timestamp_ns: int
    usage_core_nano_seconds: int
    usage_nano_cores: int | None = None  # None until a previous sample exists (see CpuUsageTracker)
    user_nano_seconds: int | None = None
    system_nano_seconds: int | None = None
    per_cpu_nano_seconds: tuple[int, ...] = ()
    periods: int = 0
    throttled_periods: int = 0
    throttled_nano_seconds: int = 0


@dataclass(frozen=True)
class MemoryStats:
    timestamp_ns: int
    usage_bytes: int
    working_set_bytes: int
    rss_bytes: int
    cache_bytes: int
    page_faults: int
    major_page_faults: int
    limit_bytes: int | None = None  # None when unlimited
    available_bytes: int | None = None  # limit − working set, when limited
    max_usage_bytes: int | None = None
    stat: dict[str, int] = field(default_factory=dict, hash=False)  # memory.stat as read (for Docker's stats)


@dataclass(frozen=True)
class PidsStats:
    current: int
    limit: int | None = None


@dataclass(frozen=True)
class ContainerStats:
    """What one cgroup reports; a section is None when its controller is not mounted."""

    cgroup: str
    cpu: CpuStats | None
    memory: MemoryStats | None
    pids: PidsStats | None


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError as err:
        # ENODEV/EINVAL show up for controllers the kernel does not enable here.
        if err.errno in (19, 22):
            return None
        raise


def _int(path: Path) -> int | None:
    text = _read(path)
    if text is None:
        return None
    text = text.strip()
    if text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def parse_flat_keyed(text: str | None) -> dict[str, int]:
    """``key value`` lines (memory.stat, cpu.stat, memory.events, memory.oom_control)."""
    result: dict[str, int] = {}
    for line in (text or "").splitlines():
        key, _, value = line.partition(" ")
        try:
            result[key] = int(value)
        except ValueError:
            continue
    return result


def _limit(value: int | None) -> int | None:
    return None if value is None or value >= _UNLIMITED else value


def read_cpu(h: Hierarchies, cgroup: str, now_ns: int | None = None) -> CpuStats | None:
    now_ns = time.time_ns() if now_ns is None else now_ns
    if h.is_v2:
        base = h.controller("cpu", cgroup)
        assert base is not None
        stat = parse_flat_keyed(_read(base / "cpu.stat"))
        if "usage_usec" not in stat:
            return None
        return CpuStats(
            timestamp_ns=now_ns,
            usage_core_nano_seconds=stat["usage_usec"] * 1000,
            user_nano_seconds=stat.get("user_usec", 0) * 1000,
            system_nano_seconds=stat.get("system_usec", 0) * 1000,
            periods=stat.get("nr_periods", 0),
            throttled_periods=stat.get("nr_throttled", 0),
            throttled_nano_seconds=stat.get("throttled_usec", 0) * 1000,
        )
    acct = h.controller("cpuacct", cgroup)
    if acct is None:
        return None
    usage = _int(acct / "cpuacct.usage")
    if usage is None:
        return None
    ticks = parse_flat_keyed(_read(acct / "cpuacct.stat"))
    per_cpu = tuple(int(v) for v in (_read(acct / "cpuacct.usage_percpu") or "").split())
    cpu = h.controller("cpu", cgroup)
    throttling = parse_flat_keyed(_read(cpu / "cpu.stat")) if cpu is not None else {}
    return CpuStats(
        timestamp_ns=now_ns,
        usage_core_nano_seconds=usage,
        user_nano_seconds=ticks["user"] * _USER_HZ_NS if "user" in ticks else None,
        system_nano_seconds=ticks["system"] * _USER_HZ_NS if "system" in ticks else None,
        per_cpu_nano_seconds=per_cpu,
        periods=throttling.get("nr_periods", 0),
        throttled_periods=throttling.get("nr_throttled", 0),
        throttled_nano_seconds=throttling.get("throttled_time", 0),
    )


def read_memory(h: Hierarchies, cgroup: str, now_ns: int | None = None) -> MemoryStats | None:
    now_ns = time.time_ns() if now_ns is None else now_ns
    base = h.controller("memory", cgroup)
    if base is None:
        return None
    if h.is_v2:
        usage = _int(base / "memory.current")
        if usage is None:
            return None
        stat = parse_flat_keyed(_read(base / "memory.stat"))
        inactive_file = stat.get("inactive_file", 0)
        rss, cache = stat.get("anon", 0), stat.get("file", 0)
        faults, major = stat.get("pgfault", 0), stat.get("pgmajfault", 0)
        limit = _limit(_int(base / "memory.max"))
        max_usage = _int(base / "memory.peak")
    else:
        usage = _int(base / "memory.usage_in_bytes")
        if usage is None:
            return None
        stat = parse_flat_keyed(_read(base / "memory.stat"))

        def total(key: str) -> int:
            return stat.get("total_" + key, stat.get(key, 0))

        inactive_file = total("inactive_file")
        rss, cache = total("rss"), total("cache")
        faults, major = total("pgfault"), total("pgmajfault")
        limit = _limit(_int(base / "memory.limit_in_bytes"))
        max_usage = _int(base / "memory.max_usage_in_bytes")
    working_set = usage - inactive_file if inactive_file < usage else 0
    available = None
    if limit is not None:
        available = limit - working_set if limit > working_set else 0
    return MemoryStats(
        timestamp_ns=now_ns,
        usage_bytes=usage,
        working_set_bytes=working_set,
        rss_bytes=rss,
        cache_bytes=cache,
        page_faults=faults,
        major_page_faults=major,
        limit_bytes=limit,
        available_bytes=available,
        max_usage_bytes=max_usage,
        stat=stat,
    )


def read_pids(h: Hierarchies, cgroup: str) -> PidsStats | None:
    base = h.controller("pids", cgroup)
    if base is None:
        return None
    current = _int(base / "pids.current")
    if current is None:
        return None
    return PidsStats(current=current, limit=_int(base / "pids.max"))


def cgroup_exists(h: Hierarchies, cgroup: str) -> bool:
    for controller in ("memory", "cpuacct", "cpu", "pids"):
        base = h.controller(controller, cgroup)
        if base is not None:
            return base.is_dir()
    return any(root.joinpath(cgroup.lstrip("/")).is_dir() for root in h.all_roots())


def read_stats(cgroup: str, h: Hierarchies | None = None, *, now_ns: int | None = None) -> ContainerStats:
    """One cgroup's stats (blocking: a few sysfs reads). NotFound when the cgroup is gone."""
    h = h or host()
    if not cgroup_exists(h, cgroup):
        raise errors.NotFound(f"cgroup {cgroup} not found")
    now_ns = time.time_ns() if now_ns is None else now_ns
    return ContainerStats(
        cgroup=cgroup,
        cpu=read_cpu(h, cgroup, now_ns),
        memory=read_memory(h, cgroup, now_ns),
        pids=read_pids(h, cgroup),
    )


async def read_stats_async(cgroup: str, h: Hierarchies | None = None) -> ContainerStats:
    """``read_stats`` off the event loop."""
    return await asyncio.to_thread(read_stats, cgroup, h)


async def read_stats_many(cgroups: Iterable[str], h: Hierarchies | None = None) -> dict[str, ContainerStats]:
    """Stats of many cgroups in one worker thread; cgroups that vanished are left out."""

    def collect() -> dict[str, ContainerStats]:
        result = {}
        for cgroup in cgroups:
            try:
                result[cgroup] = read_stats(cgroup, h)
            except errors.NotFound:
                continue
        return result

    return await asyncio.to_thread(collect)


class CpuUsageTracker:
    """Derives usage_nano_cores from successive samples, keeping the previous one per key (container ID)."""

    def __init__(self) -> None:
        self._previous: dict[str, tuple[int, int, int | None]] = {}  # timestamp, usage, last rate

    def update(self, key: str, cpu: CpuStats) -> CpuStats:
        """``cpu`` with usage_nano_cores from the previous sample of ``key``; None for the first sample."""
        previous = self._previous.get(key)
        if previous is not None and previous[0] >= cpu.timestamp_ns:
            # Simultaneous (or reordered) requests: report the last rate, keep the newer baseline.
            return replace(cpu, usage_nano_cores=previous[2])
        rate = None
        if previous is not None and cpu.usage_core_nano_seconds >= previous[1]:
            # (A smaller counter means a new cgroup under the same key: start over.)
            elapsed = cpu.timestamp_ns - previous[0]
            rate = (cpu.usage_core_nano_seconds - previous[1]) * 1_000_000_000 // elapsed
        self._previous[key] = (cpu.timestamp_ns, cpu.usage_core_nano_seconds, rate)
        return replace(cpu, usage_nano_cores=rate)

    def forget(self, key: str) -> None:
        self._previous.pop(key, None)
