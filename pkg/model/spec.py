"""What a container or pod asks of the OCI spec, as plain data: namespaces, mounts, devices, resources,
rlimits, DNS and security profiles.  The core's spec builder (pkg.runtime: spec_options, resources,
etc_files, seccomp) works on these; they live with the models so that pkg.model depends on nothing above it."""
from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field


class NamespaceMode(enum.Enum):
    """CRI NamespaceMode: where a pod's or container's namespace comes from."""

    POD = 0
    CONTAINER = 1
    NODE = 2
    TARGET = 3


class Propagation(enum.Enum):
    """CRI MountPropagation."""

    PRIVATE = 0
    HOST_TO_CONTAINER = 1
    BIDIRECTIONAL = 2


@dataclass(frozen=True)
class Mount:
    """A host path bind-mounted into the container (CRI Mount; SELinux relabel is not supported and ignored)."""

    container_path: str
    host_path: str
    readonly: bool = False
    propagation: Propagation = Propagation.PRIVATE
    recursive_read_only: bool = False
    selinux_relabel: bool = False
    # --tmpfs/--mount type=tmpfs: a fresh tmpfs at container_path (host_path unused); 0 = kernel default.
    tmpfs: bool = False
    tmpfs_size: int = 0
    tmpfs_mode: int = 0


@dataclass(frozen=True)
class Device:
    """A host device node (or a directory of them) exposed in the container, with cgroup access ``rwm``."""

    container_path: str
    host_path: str
    permissions: str = "rwm"
    # --device-cgroup-rule ("c 7:128 rwm", "a *:* m"): only a cgroup allow rule, no node; CRI never sets it.
    cgroup_rule: str = ""


@dataclass(frozen=True)
class HugepageLimit:
    page_size: str  # "2MB", "1GB" — the cgroup file's spelling
    limit: int


@dataclass(frozen=True)
class Resources:
    """LinuxContainerResources plus a pids limit; 0 / "" / empty = not set."""

    cpu_period: int = 0
    cpu_quota: int = 0
    cpu_shares: int = 0
    memory_limit_in_bytes: int = 0
    memory_swap_limit_in_bytes: int = 0
    cpuset_cpus: str = ""
    cpuset_mems: str = ""
    hugepage_limits: tuple[HugepageLimit, ...] = ()
    unified: Mapping[str, str] = field(default_factory=dict)
    pids_limit: int = 0
    oom_score_adj: int | None = None


@dataclass(frozen=True)
class Rlimit:
    type: str  # "RLIMIT_NOFILE" or "nofile"
    soft: int
    hard: int


@dataclass(frozen=True)
class DNSConfig:
    servers: tuple[str, ...] = ()
    searches: tuple[str, ...] = ()
    options: tuple[str, ...] = ()


class ProfileType(enum.Enum):
    RUNTIME_DEFAULT = "RuntimeDefault"
    UNCONFINED = "Unconfined"
    LOCALHOST = "Localhost"


@dataclass(frozen=True)
class SecurityProfile:
    """A CRI SecurityProfile (seccomp or AppArmor): the kind, and for Localhost the node-local reference."""

    type: ProfileType
    localhost_ref: str = ""
