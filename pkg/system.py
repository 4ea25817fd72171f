"""Facts about this engine and host, for Docker's /version and /info and CRI verbose status."""
from __future__ import annotations

import asyncio
import os
import platform
import shutil
import socket
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pkg import errors
from pkg.cgroups import fs as cgroupfs
from pkg.config import Config
from pkg.containerd import snapshots
from pkg.containerd.client import Client
from pkg.model.container import ContainerMetadata
from pkg.runtime.containers import ContainerService
from pkg.version import narwhal_version, python_version


@dataclass(frozen=True)
class Component:
    name: str
    version: str
    details: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class VersionInfo:
    version: str
    python: str
    os: str
    arch: str
    kernel: str
    components: list[Component]


_GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x"}


def goarch() -> str:
    machine = platform.machine()
    return _GOARCH.get(machine, machine)


@dataclass(frozen=True)
class CgroupFeatures:
    """What the host's cgroups can enforce (moby's sysinfo): /info's MemoryLimit, SwapLimit, ... flags."""

    memory_limit: bool = False
    swap_limit: bool = False
    kernel_memory: bool = False
    kernel_memory_tcp: bool = False
    cpu_cfs_period: bool = False
    cpu_cfs_quota: bool = False
    cpu_shares: bool = False
    cpuset: bool = False
    pids_limit: bool = False
    oom_kill_disable: bool = False


@dataclass(frozen=True)
class HostInfo:
    """Engine and host facts for Docker's /info (the counts of objects come from the services)."""

    id: str
    name: str  # the hostname
    server_version: str
    kernel: str
    operating_system: str
    os_version: str
    architecture: str  # uname machine (x86_64), as Docker reports it here
    ncpu: int
    mem_total: int
    cgroup_driver: str
    cgroup_version: str
    cgroups: CgroupFeatures
    ipv4_forwarding: bool
    bridge_nf_iptables: bool
    bridge_nf_ip6tables: bool
    root_dir: str
    runtimes: dict[str, str]  # name -> the runc-compatible binary
    default_runtime: str
    init_binary: str
    containerd_version: str
    containerd_commit: str
    runc_commit: str
    init_commit: str
    security_options: tuple[str, ...]
    registry_mirrors: tuple[str, ...]  # docker.io mirrors
    insecure_registries: tuple[str, ...]
    warnings: tuple[str, ...] = ()
    debug: bool = False  # narwhald logs at debug level


# The engine runs catatonit for --init (pkg.docker.engine.translate); the others only if it is missing.
_INIT_BINARIES = ("catatonit", "docker-init", "tini")


class SystemService:
    def __init__(self, client: Client, cfg: Config) -> None:
        self._client = client
        self._cfg = cfg
        self._runc: str | None = None
        self._init: str | None = None
        self._static: _Static | None = None

    async def _init_version(self, binary: str) -> str:
        """/info's InitCommit: "tini version 0.19.0 - git.de40ad0" -> de40ad0, catatonit's -> 0.1.7_catatonit."""
        if self._init is None:
            self._init = ""
            if binary:
                out = await _first_line_of(binary, "--version")
                self._init = out.rsplit("git.", 1)[-1].strip() if "git." in out else out.rpartition(" ")[2]
        return self._init

    async def _runc_version(self) -> str:
        if self._runc is None:
            try:
                proc = await asyncio.create_subprocess_exec(
                    "runc", "--version", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
                )
                out, _ = await asyncio.wait_for(proc.communicate(), 5)
                first = out.decode(errors="replace").splitlines()[0] if out else ""
                self._runc = first.removeprefix("runc version ").strip() or "unknown"
            except (TimeoutError, OSError):
                self._runc = "unknown"
        return self._runc

    async def version(self) -> VersionInfo:
        try:
            ctr_version, ctr_revision = await self._client.version()
        except errors.NarwhalError:
            ctr_version, ctr_revision = "unavailable", ""
        engine = narwhal_version()
        return VersionInfo(
            version=engine,
            python=python_version(),
            os="linux",
            arch=goarch(),
            kernel=os.uname().release,
            components=[
                Component("Engine", engine, {"ApiVersion": "", "Os": "linux", "Arch": goarch()}),
                Component("containerd", ctr_version, {"GitCommit": ctr_revision}),
                Component("runc", await self._runc_version()),
            ],
        )

    async def info(self) -> HostInfo:
        try:
            ctr_version, ctr_revision = await self._client.version()
        except errors.NarwhalError:
            ctr_version, ctr_revision = "unavailable", ""
        runc = await self._runc_version()
        if self._static is None:
            self._static = await asyncio.to_thread(_read_static, self._cfg.root)
        facts = self._static
        forwarding, nf_ip4, nf_ip6 = await asyncio.to_thread(
            lambda: tuple(_sysctl(name) for name in (
                "net/ipv4/ip_forward", "net/bridge/bridge-nf-call-iptables", "net/bridge/bridge-nf-call-ip6tables")))
        warnings = []
        if not facts.cgroups.swap_limit:
            warnings.append("WARNING: No swap limit support")
        if not nf_ip4:
            warnings.append("WARNING: bridge-nf-call-iptables is disabled")
        if not nf_ip6:
            warnings.append("WARNING: bridge-nf-call-ip6tables is disabled")
        cfg = self._cfg
        runtimes = {name: _which(binary) for name, binary in cfg.runtime_handlers.items()}
        runtimes.setdefault("runc", _which("runc"))
        security = ["name=seccomp,profile=builtin"]
        if facts.cgroup_version == "2":
            security.append("name=cgroupns")
        return HostInfo(
            id=facts.id, name=socket.gethostname(), server_version=narwhal_version(),
            kernel=os.uname().release, operating_system=facts.os, os_version=facts.os_version,
            architecture=platform.machine(), ncpu=os.cpu_count() or 1, mem_total=facts.mem_total,
            cgroup_driver="cgroupfs", cgroup_version=facts.cgroup_version, cgroups=facts.cgroups,
            ipv4_forwarding=forwarding, bridge_nf_iptables=nf_ip4, bridge_nf_ip6tables=nf_ip6,
            root_dir=str(cfg.root / "docker"), runtimes=runtimes, default_runtime="runc", init_binary=facts.init,
            containerd_version=ctr_version, containerd_commit=ctr_revision, runc_commit=runc,
            init_commit=await self._init_version(facts.init),
            security_options=tuple(security),
            registry_mirrors=tuple(cfg.registry.mirrors.get("docker.io", [])),
            insecure_registries=tuple(cfg.registry.insecure),
            warnings=tuple(warnings), debug=cfg.log_level == "debug",
        )


@dataclass(frozen=True)
class _Static:
    """Host facts read once: they do not change while narwhald runs (the sysctls an admin may flip are re-read)."""

    id: str
    os: str
    os_version: str
    mem_total: int
    cgroup_version: str
    cgroups: CgroupFeatures
    init: str


def _read_static(root: Path) -> _Static:
    os_name, os_version = _os_release()
    hierarchies = cgroupfs.detect()
    return _Static(
        id=_engine_id(root / "engine-id"), os=os_name, os_version=os_version, mem_total=_mem_total(),
        cgroup_version="2" if hierarchies.is_v2 else "1", cgroups=_cgroup_features(hierarchies),
        init=next((name for name in _INIT_BINARIES if shutil.which(name)), ""),
    )


async def _first_line_of(*cmd: str) -> str:
    try:
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    except OSError:
        return ""
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 5)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return ""
    lines = out.decode(errors="replace").splitlines()
    return lines[0].strip() if lines else ""


def _which(binary: str) -> str:
    return shutil.which(binary) or binary


def _engine_id(path: Path) -> str:
    """A stable ID for this engine (moby keeps a UUID in <root>/engine-id)."""
    try:
        value = path.read_text().strip()
        if value:
            return value
    except OSError:
        pass
    value = str(uuid.uuid4())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(value + "\n")
        tmp.replace(path)
    except OSError:
        pass  # read-only root: a fresh ID per start is still a valid answer
    return value


def _os_release(path: Path = Path("/etc/os-release")) -> tuple[str, str]:
    fields: dict[str, str] = {}
    try:
        for line in path.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep:
                fields[key.strip()] = value.strip().strip('"')
    except OSError:
        return "Linux", ""
    return fields.get("PRETTY_NAME", "Linux"), fields.get("VERSION_ID", "")


def _mem_total(path: Path = Path("/proc/meminfo")) -> int:
    try:
        for line in path.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _sysctl(name: str) -> bool:
    try:
        return Path("/proc/sys", name).read_text().strip() == "1"
    except OSError:
        return False


def _cgroup_features(h: cgroupfs.Hierarchies) -> CgroupFeatures:
    """Probe the control files a limit needs, as moby's sysinfo does, in v1 hierarchies or the v2 root."""
    if h.is_v2:
        assert h.unified is not None
        controllers = set((h.unified / "cgroup.subtree_control").read_text().split()) if (
            h.unified / "cgroup.subtree_control").exists() else set()
        memory = "memory" in controllers
        cpu = "cpu" in controllers
        return CgroupFeatures(
            memory_limit=memory, swap_limit=memory, kernel_memory=False, kernel_memory_tcp=False,
            cpu_cfs_period=cpu, cpu_cfs_quota=cpu, cpu_shares=cpu, cpuset="cpuset" in controllers,
            pids_limit="pids" in controllers, oom_kill_disable=False,
        )

    def has(controller: str, file: str) -> bool:
        base = h.v1.get(controller)
        return base is not None and (base / file).exists()

    return CgroupFeatures(
        memory_limit=has("memory", "memory.limit_in_bytes"),
        swap_limit=has("memory", "memory.memsw.limit_in_bytes"),
        kernel_memory=has("memory", "memory.kmem.limit_in_bytes"),
        kernel_memory_tcp=has("memory", "memory.kmem.tcp.limit_in_bytes"),
        cpu_cfs_period=has("cpu", "cpu.cfs_period_us"),
        cpu_cfs_quota=has("cpu", "cpu.cfs_quota_us"),
        cpu_shares=has("cpu", "cpu.shares"),
        cpuset=has("cpuset", "cpuset.cpus"),
        pids_limit=has("pids", "pids.max"),
        oom_kill_disable=has("memory", "memory.oom_control"),
    )


_USAGE_CONCURRENCY = 4


async def writable_layer_sizes(containers: ContainerService,
                               metadata: Iterable[ContainerMetadata]) -> dict[str, int]:
    """Bytes in each container's writable layer (its snapshot's own usage), for /system/df's SizeRw.

    A container whose snapshot is gone (being removed) counts 0 rather than failing the whole answer."""
    client = containers.ctx.client
    items = [m for m in metadata if m.snapshot_key]
    limit = asyncio.Semaphore(_USAGE_CONCURRENCY)  # each is a directory walk in containerd

    async def one(meta: ContainerMetadata) -> tuple[str, int]:
        async with limit:
            try:
                size, _ = await snapshots.usage(client, meta.snapshot_key)
            except errors.NarwhalError:
                size = 0
        return meta.id, size

    return dict(await asyncio.gather(*(one(m) for m in items)))
