"""Pod sandbox models: what was asked (SandboxConfig), what was made (SandboxMetadata,
immutable and checkpointed in containerd) and what it is now (SandboxStatus)."""
from __future__ import annotations

from dataclasses import dataclass, field

from pkg.model.network import NetworkAttachment, PortMapping
from pkg.model.spec import DNSConfig, NamespaceMode, SecurityProfile
from pkg.model.state import SandboxState

__all__ = ["DNSConfig", "NamespaceMode", "NamespaceOptions", "SandboxConfig", "SandboxMetadata", "SandboxStatus",
           "SecurityProfile"]

METADATA_VERSION = 1


@dataclass(frozen=True)
class NamespaceOptions:
    network: NamespaceMode = NamespaceMode.POD
    pid: NamespaceMode = NamespaceMode.CONTAINER
    ipc: NamespaceMode = NamespaceMode.POD
    target_id: str = ""
    uts: NamespaceMode = NamespaceMode.POD  # NODE: the host's UTS namespace (Docker's --uts host); CRI never sets it


@dataclass(frozen=True)
class SandboxConfig:
    name: str
    uid: str
    namespace: str
    attempt: int = 0
    hostname: str = ""
    log_directory: str = ""
    dns: DNSConfig | None = None
    port_mappings: list[PortMapping] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    cgroup_parent: str = ""
    sysctls: dict[str, str] = field(default_factory=dict)
    namespace_options: NamespaceOptions = field(default_factory=NamespaceOptions)
    privileged: bool = False
    run_as_user: int | None = None
    run_as_group: int | None = None
    supplemental_groups: list[int] = field(default_factory=list)
    readonly_rootfs: bool = False
    seccomp: SecurityProfile | None = None
    # Capabilities of the core that only one front end uses so far (CRI never sets them), neutral on purpose:
    # the named networks to join (empty: the default network; pkg.cni attaches them), ...
    networks: tuple[NetworkAttachment, ...] = ()
    # ... a network namespace of its own with just lo and no CNI (--network none), ...
    no_network: bool = False
    shm_size: int = 0  # ... and the bytes of the pod's /dev/shm (--shm-size); 0 = the default 64 MiB

    @property
    def host_network(self) -> bool:
        return self.namespace_options.network == NamespaceMode.NODE

    @property
    def unique_name(self) -> str:
        """kubelet's sandbox name: one per (name, namespace, uid, attempt)."""
        return f"{self.name}_{self.namespace}_{self.uid}_{self.attempt}"


@dataclass(frozen=True)
class SandboxMetadata:
    id: str
    config: SandboxConfig
    runtime_handler: str
    created_at: int  # ns since the epoch
    netns_path: str = ""  # "" with host networking
    ipc_path: str = ""  # pinned IPC namespace ("" = host IPC)
    uts_path: str = ""  # pinned UTS namespace ("" = host UTS)
    infra: bool = False  # an infra (pause) task holds the PID namespace
    cgroup_parent: str = ""
    sandbox_dir: str = ""  # hostname, hosts, resolv.conf, shm live here
    version: int = METADATA_VERSION


@dataclass(frozen=True)
class SandboxStatus:
    state: SandboxState
    ip: str = ""
    additional_ips: list[str] = field(default_factory=list)
    infra_pid: int = 0
    network_ready: bool = False
    message: str = ""
