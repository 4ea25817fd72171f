"""Container models: ContainerConfig (what was asked), ContainerMetadata (immutable,
checkpointed in containerd) and ContainerStatus (the mutable part, via the store)."""
from __future__ import annotations

from dataclasses import dataclass, field

from pkg.model.sandbox import NamespaceOptions, SecurityProfile
from pkg.model.spec import Device, HugepageLimit, Mount, Propagation, Resources, Rlimit
from pkg.model.state import ContainerState

__all__ = ["ContainerConfig", "ContainerMetadata", "ContainerSecurity", "ContainerStatus", "Device", "HugepageLimit",
           "Mount", "Propagation", "Resources"]

METADATA_VERSION = 1


@dataclass(frozen=True)
class ContainerSecurity:
    privileged: bool = False
    capabilities_add: list[str] = field(default_factory=list)
    capabilities_drop: list[str] = field(default_factory=list)
    capabilities_add_ambient: list[str] = field(default_factory=list)
    namespace_options: NamespaceOptions = field(default_factory=NamespaceOptions)
    run_as_user: int | None = None
    run_as_group: int | None = None
    run_as_username: str = ""
    supplemental_groups: list[int] = field(default_factory=list)
    strict_supplemental_groups: bool = False  # CRI SupplementalGroupsPolicy Strict (default Merge)
    readonly_rootfs: bool = False
    no_new_privs: bool = False
    masked_paths: list[str] | None = None  # None: runtime defaults
    readonly_paths: list[str] | None = None
    seccomp: SecurityProfile | None = None
    cgroupns: bool | None = None  # own cgroup namespace; None: the runtime's default (own on cgroup v2)
    apparmor: SecurityProfile | None = None  # None: RuntimeDefault where AppArmor is enabled


@dataclass(frozen=True)
class LogRotation:
    """Docker's json-file/local ``max-size``, ``max-file`` and ``compress``, enforced by narwhal-logger."""

    max_size: int = 0  # bytes; 0: never rotate
    max_files: int = 1  # files kept, the current one included
    compress: bool = False


@dataclass(frozen=True)
class ContainerConfig:
    name: str
    image: str
    attempt: int = 0
    command: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    working_dir: str = ""
    envs: list[tuple[str, str]] = field(default_factory=list)
    mounts: list[Mount] = field(default_factory=list)
    devices: list[Device] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    log_path: str = ""  # relative to the sandbox's log_directory
    log_rotation: LogRotation | None = None  # None: one file that grows (CRI: the kubelet rotates)
    stdin: bool = False
    stdin_once: bool = False
    tty: bool = False
    resources: Resources | None = None
    security: ContainerSecurity = field(default_factory=ContainerSecurity)
    rlimits: list[Rlimit] = field(default_factory=list)  # Docker's --ulimit; CRI never sets it


@dataclass(frozen=True)
class ContainerUser:
    """The identity the container's first process starts with (CRI ContainerStatus.user), as resolved into
    its OCI spec from run_as_*, the image's USER, /etc/passwd and /etc/group."""

    uid: int
    gid: int
    supplemental_groups: tuple[int, ...] = ()


@dataclass(frozen=True)
class ContainerMetadata:
    id: str
    sandbox_id: str
    config: ContainerConfig
    image_id: str
    image_ref: str  # the reference the image was resolved from
    created_at: int  # ns since the epoch
    log_path: str = ""  # absolute; "" when the sandbox has no log directory
    snapshot_key: str = ""
    stop_signal: str = ""
    cgroups_path: str = ""
    version: int = METADATA_VERSION
    # Known once the spec is built; not part of the record written before it, so recovery reads it from the spec.
    user: ContainerUser | None = None

    @property
    def unique_name(self) -> str:
        """kubelet's container name: one per (container name, attempt) within a sandbox."""
        return f"{self.config.name}_{self.sandbox_id}_{self.config.attempt}"


@dataclass(frozen=True)
class ContainerStatus:
    state: ContainerState
    pid: int = 0
    started_at: int = 0
    finished_at: int = 0
    exit_code: int = 0
    reason: str = ""
    message: str = ""
    resources: Resources | None = None
    removing: bool = False
