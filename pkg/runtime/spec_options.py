"""Typed inputs of the OCI spec builders (``spec.py``): what a container or pod infra container asks for.

The front ends convert their requests (protobufs, JSON) into these;
nothing here knows either wire format.  ``HostInfo`` carries the host facts
the rules depend on, probed once and replaceable in tests.
"""
from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pkg.images.model import ImageConfig
from pkg.model.spec import Device as Device
from pkg.model.spec import Mount as Mount
from pkg.model.spec import NamespaceMode as NamespaceMode  # re-exported: defined with the models
from pkg.model.spec import Propagation as Propagation
from pkg.runtime import caps as capabilities
from pkg.runtime import seccomp
from pkg.runtime.resources import CgroupFacts, Resources, Rlimit, current_oom_score_adj
from pkg.runtime.seccomp import SecurityProfile
from pkg.runtime.user import ImageFiles


@dataclass(frozen=True)
class Namespace:
    """One namespace of a process: a fresh one, the host's, or an existing one joined by path."""

    mode: Literal["new", "host", "join"] = "new"
    path: str = ""

    @classmethod
    def new(cls) -> Namespace:
        return cls("new")

    @classmethod
    def host(cls) -> Namespace:
        return cls("host")

    @classmethod
    def join(cls, path: str) -> Namespace:
        return cls("join", path)


@dataclass(frozen=True)
class SandboxFiles:
    """Per-pod files every container of the pod bind-mounts ("" = none).

    ``shm_path`` is the pod's /dev/shm tmpfs, or "/dev/shm" itself for host IPC.
    """

    hostname_path: str = ""
    hosts_path: str = ""
    resolv_conf_path: str = ""
    shm_path: str = ""


@dataclass(frozen=True)
class HostInfo:
    """Facts of this host the spec rules depend on."""

    capabilities: frozenset[str] = frozenset(capabilities.ALL_CAPS)
    oom_score_adj: int = -1000
    cgroups: CgroupFacts = field(default_factory=CgroupFacts)
    arch: str = "amd64"
    kernel: tuple[int, int] = (6, 1)
    apparmor: bool = False
    rlimits_hard: Mapping[str, int] | None = None  # None: read narwhald's own limits when needed
    mountinfo: Path = Path("/proc/self/mountinfo")
    dev_root: Path = Path("/dev")

    @classmethod
    def probe(cls) -> HostInfo:
        return _probe()


@functools.cache
def _probe() -> HostInfo:
    return HostInfo(
        capabilities=capabilities.current_effective_caps(),
        oom_score_adj=current_oom_score_adj(),
        cgroups=CgroupFacts.probe(),
        arch=seccomp.host_arch(),
        kernel=seccomp.kernel_version(),
        apparmor=Path("/sys/kernel/security/apparmor").exists(),
    )


@dataclass(frozen=True)
class ContainerSpecOptions:
    """Everything ``build_container_spec`` needs, as containerd's CRI reads it from a ContainerConfig.

    ``command`` None means "not given" (the image ENTRYPOINT applies); an empty
    tuple clears the entrypoint (``--entrypoint ""``).  CRI callers
    pass None for an empty command, as protobuf cannot tell the two apart.
    ``masked_paths``/``readonly_paths`` None mean containerd's defaults.
    ``rootfs_path`` is a readable view of the container's rootfs, used only to
    resolve users and groups; None when the image has no files to consult.
    """

    id: str
    image: ImageConfig = field(default_factory=ImageConfig)
    command: tuple[str, ...] | None = None
    args: tuple[str, ...] = ()
    env: tuple[str, ...] = ()  # "KEY=value", applied after the image's ENV
    working_dir: str = ""
    tty: bool = False
    hostname: str = ""  # the pod's hostname: HOSTNAME in env, and the UTS hostname when the UTS ns is new
    mounts: tuple[Mount, ...] = ()
    devices: tuple[Device, ...] = ()
    privileged: bool = False
    sandbox_privileged: bool = True  # a privileged container needs a privileged pod (CRI)
    add_capabilities: tuple[str, ...] = ()
    drop_capabilities: tuple[str, ...] = ()
    add_ambient_capabilities: tuple[str, ...] = ()  # also added to every other set (CRI Capability)
    run_as_user: int | None = None
    run_as_group: int | None = None
    run_as_username: str = ""
    supplemental_groups: tuple[int, ...] = ()
    merge_image_groups: bool = True  # SupplementalGroupsPolicy Merge (False = Strict)
    readonly_rootfs: bool = False
    no_new_privs: bool = False
    masked_paths: tuple[str, ...] | None = None
    readonly_paths: tuple[str, ...] | None = None
    seccomp: SecurityProfile | None = None  # None = unconfined (CRI's unset)
    apparmor: SecurityProfile | None = None
    network: Namespace = field(default_factory=Namespace)
    ipc: Namespace = field(default_factory=Namespace)
    uts: Namespace = field(default_factory=Namespace)
    pid: Namespace = field(default_factory=Namespace)
    sysctls: Mapping[str, str] = field(default_factory=dict)
    resources: Resources | None = None
    cgroups_path: str = ""
    cgroupns: bool | None = None  # None: own cgroup namespace on cgroup v2 unless privileged (containerd's rule)
    rlimits: tuple[Rlimit, ...] = ()
    annotations: Mapping[str, str] = field(default_factory=dict)
    sandbox_files: SandboxFiles = field(default_factory=SandboxFiles)
    rootfs_path: Path | None = None
    # The image's /etc/passwd and /etc/group read before (pkg.runtime.image_files): users resolve against these
    # instead of rootfs_path's files.
    image_files: ImageFiles | None = None
    volumes_dir: Path | None = None  # where image VOLUMEs get their directories; None: image volumes are not mounted
    root_path: str = "rootfs"  # spec root.path, relative to the bundle
    create_missing_host_paths: bool = True  # bind sources that do not exist become directories (as containerd)


@dataclass(frozen=True)
class SandboxSpecOptions:
    """The pod infra container (``catatonit -P`` from the pause image), run only when the PID ns is shared."""

    id: str
    image: ImageConfig = field(default_factory=ImageConfig)
    hostname: str = ""
    network: Namespace = field(default_factory=Namespace)
    ipc: Namespace = field(default_factory=Namespace)
    uts: Namespace = field(default_factory=Namespace)
    pid: Namespace = field(default_factory=Namespace)
    run_as_user: int | None = None
    run_as_group: int | None = None
    supplemental_groups: tuple[int, ...] = ()
    privileged: bool = False
    seccomp: SecurityProfile | None = None
    sysctls: Mapping[str, str] = field(default_factory=dict)
    cgroups_path: str = ""
    cpu_shares: int = 2  # containerd's DefaultSandboxCPUshares
    oom_score_adj: int = -998  # containerd's defaultSandboxOOMAdj, clamped to narwhald's own
    annotations: Mapping[str, str] = field(default_factory=dict)
    shm_path: str = ""
    resolv_conf_path: str = ""
    rootfs_path: Path | None = None
    root_path: str = "rootfs"
