"""Docker stats and top: one sample of a container's cgroup, block I/O, network and host CPU counters,
and its processes as ``ps`` shows them.

Docker clients compute CPU % from two samples (``cpu_stats`` against
``precpu_stats``: container usage delta over host ``system_cpu_usage``
delta), so a sample carries the host's total CPU time from /proc/stat.
Network counters are the container's own: /proc/<pid>/net/dev of its init
process reads its network namespace.
"""
from __future__ import annotations

import asyncio
import os
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path

from pkg import errors
from pkg.cgroups.fs import Hierarchies, host
from pkg.cgroups.stats import ContainerStats, read_stats
from pkg.containerd import tasks as ctr_tasks
from pkg.model.state import ContainerState
from pkg.runtime.containers import ContainerService

_USER_HZ_NS = 10_000_000
PS_TIMEOUT = 30.0


@dataclass(frozen=True)
class BlkioEntry:
    major: int
    minor: int
    op: str  # Read, Write, Sync, Async, Discard, Total
    value: int


@dataclass(frozen=True)
class NetworkCounters:
    rx_bytes: int = 0
    rx_packets: int = 0
    rx_errors: int = 0
    rx_dropped: int = 0
    tx_bytes: int = 0
    tx_packets: int = 0
    tx_errors: int = 0
    tx_dropped: int = 0


@dataclass(frozen=True)
class Sample:
    """One reading; ``cgroup`` is None for a container that is not running."""

    read_ns: int
    cgroup: ContainerStats | None = None
    system_cpu_ns: int = 0
    online_cpus: int = 0
    host_memory: int = 0
    io_service_bytes: tuple[BlkioEntry, ...] = ()
    io_serviced: tuple[BlkioEntry, ...] = ()
    networks: dict[str, NetworkCounters] = field(default_factory=dict)


def parse_proc_stat(text: str) -> int:
    """Total host CPU time (ns) from /proc/stat's aggregate ``cpu`` line, as moby's getSystemCPUUsage."""
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] == "cpu":
            return sum(int(v) for v in parts[1:8]) * _USER_HZ_NS
    return 0


def parse_net_dev(text: str) -> dict[str, NetworkCounters]:
    """/proc/net/dev, without the loopback (Docker reports the container's interfaces only)."""
    result = {}
    for line in text.splitlines()[2:]:
        name, _, counters = line.partition(":")
        name = name.strip()
        values = counters.split()
        if not name or name == "lo" or len(values) < 16:
            continue
        v = [int(x) for x in values]
        result[name] = NetworkCounters(rx_bytes=v[0], rx_packets=v[1], rx_errors=v[2], rx_dropped=v[3],
                                       tx_bytes=v[8], tx_packets=v[9], tx_errors=v[10], tx_dropped=v[11])
    return result


def parse_blkio(text: str) -> tuple[BlkioEntry, ...]:
    """v1 ``blkio.throttle.io_service_bytes_recursive`` lines: ``8:0 Read 4096`` (the Total line skipped)."""
    entries = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 3 or ":" not in parts[0]:
            continue
        major, _, minor = parts[0].partition(":")
        try:
            entries.append(BlkioEntry(int(major), int(minor), parts[1], int(parts[2])))
        except ValueError:
            continue
    return tuple(entries)


def parse_io_stat(text: str) -> tuple[tuple[BlkioEntry, ...], tuple[BlkioEntry, ...]]:
    """v2 ``io.stat`` → (bytes, ops) as Docker reports them on cgroup v2 (lower-case ops)."""
    service: list[BlkioEntry] = []
    ops: list[BlkioEntry] = []
    for line in text.splitlines():
        parts = line.split()
        if not parts or ":" not in parts[0]:
            continue
        major, _, minor = parts[0].partition(":")
        fields = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
        for key, op, target in (("rbytes", "read", service), ("wbytes", "write", service),
                                ("rios", "read", ops), ("wios", "write", ops)):
            if key in fields:
                target.append(BlkioEntry(int(major), int(minor), op, int(fields[key])))
    return tuple(service), tuple(ops)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _host_memory() -> int:
    for line in _read(Path("/proc/meminfo")).splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 0


def _sample(cgroup: str, pid: int, h: Hierarchies) -> Sample:
    """Blocking: a few sysfs and procfs reads."""
    now = time.time_ns()
    try:
        stats: ContainerStats | None = read_stats(cgroup, h, now_ns=now)
    except errors.NotFound:
        stats = None
    service: tuple[BlkioEntry, ...] = ()
    serviced: tuple[BlkioEntry, ...] = ()
    if h.is_v2:
        base = h.controller("io", cgroup)
        if base is not None:
            service, serviced = parse_io_stat(_read(base / "io.stat"))
    else:
        base = h.controller("blkio", cgroup)
        if base is not None:
            service = parse_blkio(_read(base / "blkio.throttle.io_service_bytes_recursive"))
            serviced = parse_blkio(_read(base / "blkio.throttle.io_serviced_recursive"))
    online = len(stats.cpu.per_cpu_nano_seconds) if stats and stats.cpu and stats.cpu.per_cpu_nano_seconds else 0
    return Sample(
        read_ns=now, cgroup=stats, system_cpu_ns=parse_proc_stat(_read(Path("/proc/stat"))),
        online_cpus=online or os.cpu_count() or 1, host_memory=_host_memory(),
        io_service_bytes=service, io_serviced=serviced,
        networks=parse_net_dev(_read(Path(f"/proc/{pid}/net/dev"))) if pid else {},
    )


async def sample(containers: ContainerService, container_id: str) -> Sample:
    """A reading of the container now (an empty one when it is not running)."""
    metadata, status = containers.get(container_id)
    if status.state != ContainerState.RUNNING:
        return Sample(read_ns=time.time_ns())
    return await asyncio.to_thread(_sample, metadata.cgroups_path, status.pid, host())


@dataclass(frozen=True)
class Top:
    titles: list[str]
    processes: list[list[str]]


def parse_ps(output: str, pids: set[int]) -> Top:
    """``ps`` output filtered to ``pids`` (moby's parsePSOutput): the last column keeps its spaces."""
    lines = output.splitlines()
    if not lines:
        raise errors.Internal("ps printed nothing")
    titles = lines[0].split()
    try:
        pid_index = titles.index("PID")
    except ValueError:
        raise errors.InvalidArgument("Couldn't find PID field in ps output") from None
    processes = []
    for line in lines[1:]:
        if not line.strip():
            continue
        fields = line.split(maxsplit=len(titles) - 1)
        try:
            pid = int(fields[pid_index])
        except (IndexError, ValueError):
            continue
        if pid in pids:
            processes.append(fields)
    return Top(titles, processes)


async def top(containers: ContainerService, container_id: str, ps_args: str) -> Top:
    metadata, status = containers.get(container_id)
    if status.state != ContainerState.RUNNING:
        raise errors.Conflict(f"container {metadata.id} is not running")
    pids = set(await ctr_tasks.pids(containers.ctx.client, metadata.id))
    try:
        args = shlex.split(ps_args or "-ef")
    except ValueError as exc:
        raise errors.InvalidArgument(f"invalid ps_args: {exc}") from None
    proc = await asyncio.create_subprocess_exec(
        "ps", *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), PS_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise errors.DeadlineExceeded("ps did not finish") from None
    if proc.returncode != 0:
        raise errors.InvalidArgument(f"ps: {err.decode(errors='replace').strip() or 'failed'}")
    return parse_ps(out.decode(errors="replace"), pids)
