"""Typed model of a Docker container: what was asked (ContainerSpec + HostConfig), what it is now
(EngineState), and the view the facade reads (EngineContainer).

A Docker container is one core sandbox plus one core container of the Docker
domain; its ID is the core container's.  The Docker-level parts that the core
does not know (name, restart policy and count, "manually stopped", ...) live
in an engine record persisted next to the container (pkg.docker.engine.records).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

from pkg.docker.volumes.model import MountPoint, MountSpec
from pkg.model.container import ContainerStatus
from pkg.model.state import ContainerState, DockerState, docker_state

RECORD_VERSION = 1


class RestartPolicyName(enum.Enum):
    NO = "no"
    ALWAYS = "always"
    ON_FAILURE = "on-failure"
    UNLESS_STOPPED = "unless-stopped"


@dataclass(frozen=True)
class RestartPolicy:
    name: RestartPolicyName = RestartPolicyName.NO
    maximum_retry_count: int = 0


@dataclass(frozen=True)
class PortBinding:
    """One published port; ``host_port`` 0 asks for an ephemeral port (chosen at create)."""

    container_port: int
    protocol: str = "tcp"
    host_ip: str = ""
    host_port: int = 0


@dataclass(frozen=True)
class DeviceMapping:
    path_on_host: str
    path_in_container: str
    cgroup_permissions: str = "rwm"


@dataclass(frozen=True)
class Resources:
    """Docker's resource fields (0 = unset)."""

    memory: int = 0
    memory_swap: int = 0  # -1 = unlimited swap
    memory_reservation: int = 0
    nano_cpus: int = 0
    cpu_shares: int = 0
    cpu_period: int = 0
    cpu_quota: int = 0
    cpuset_cpus: str = ""
    cpuset_mems: str = ""
    pids_limit: int = 0  # <= 0 = unlimited


@dataclass(frozen=True)
class Ulimit:
    name: str  # "nofile", ...
    soft: int
    hard: int


@dataclass(frozen=True)
class EndpointSpec:
    """A network the container joins (NetworkingConfig.EndpointsConfig), with aliases and a fixed IP."""

    network: str
    aliases: tuple[str, ...] = ()
    ipv4_address: str = ""
    ipv6_address: str = ""
    link_local_ips: tuple[str, ...] = ()  # echoed in inspect's IPAMConfig only
    links: tuple[str, ...] = ()  # endpoint Links ("name:alias"): DNS names for this container only
    mac_address: str = ""  # the interface's MAC address (the tuning plugin sets it)
    driver_opts: dict[str, str] = field(default_factory=dict)  # echoed in inspect (the bridge driver reads none)


@dataclass(frozen=True)
class LogConfig:
    """HostConfig.LogConfig: the driver (json-file, local or none) and its options, as given."""

    type: str = "json-file"
    config: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class HostConfig:
    binds: tuple[str, ...] = ()  # -v strings, as given
    mounts: tuple[MountSpec, ...] = ()  # HostConfig.Mounts (--mount)
    tmpfs: dict[str, str] = field(default_factory=dict)  # --tmpfs: target -> options
    port_bindings: tuple[PortBinding, ...] = ()
    publish_all_ports: bool = False
    network_mode: str = "bridge"  # bridge (default), host, none, container:<id>, or a network name
    restart_policy: RestartPolicy = field(default_factory=RestartPolicy)
    auto_remove: bool = False
    resources: Resources = field(default_factory=Resources)
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    privileged: bool = False
    devices: tuple[DeviceMapping, ...] = ()
    init: bool | None = None
    dns: tuple[str, ...] = ()
    dns_search: tuple[str, ...] = ()
    dns_options: tuple[str, ...] = ()
    extra_hosts: tuple[str, ...] = ()
    readonly_rootfs: bool = False
    security_opt: tuple[str, ...] = ()
    shm_size: int = 0
    sysctls: dict[str, str] = field(default_factory=dict)
    oom_score_adj: int = 0
    ulimits: tuple[Ulimit, ...] = ()
    pid_mode: str = ""  # "" (own) or "host"
    ipc_mode: str = ""  # "", "private", "shareable" (own) or "host"
    log_config: LogConfig = field(default_factory=LogConfig)
    device_cgroup_rules: tuple[str, ...] = ()  # "c 7:128 rwm": allowed in the devices cgroup, no node made
    group_add: tuple[str, ...] = ()  # supplementary groups, as given (numbers only for now)
    isolation: str = ""  # only "" or "default" on Linux: echoed
    volume_driver: str = ""  # the default driver of the container's volumes: echoed (only "local" exists)
    links: tuple[str, ...] = ()  # legacy --link "name[:alias]", as given (pkg.docker.engine.links)
    cgroupns_mode: str = ""  # "private" or "host"; "" is resolved at create to the daemon's default
    uts_mode: str = ""  # "" (own) or "host"
    volumes_from: tuple[str, ...] = ()  # "<container>[:ro|:rw]", as given


@dataclass(frozen=True)
class HealthConfig:
    """Config.Healthcheck: Test is ["CMD", ...], ["CMD-SHELL", "..."] or ["NONE"]; durations in ns (0 = default)."""

    test: tuple[str, ...] = ()
    interval_ns: int = 0
    timeout_ns: int = 0
    retries: int = 0
    start_period_ns: int = 0


class HealthStatus(enum.Enum):
    STARTING = "starting"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


@dataclass(frozen=True)
class ProbeResult:
    start: int  # ns since the epoch
    end: int
    exit_code: int
    output: str


@dataclass(frozen=True)
class Health:
    status: HealthStatus = HealthStatus.STARTING
    failing_streak: int = 0
    log: tuple[ProbeResult, ...] = ()


@dataclass(frozen=True)
class ContainerSpec:
    """Docker's container Config, merged with the image's config at create (as Docker stores it)."""

    image: str
    cmd: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    working_dir: str = ""
    user: str = ""
    hostname: str = ""
    domainname: str = ""
    tty: bool = False
    open_stdin: bool = False
    stdin_once: bool = False
    attach_stdin: bool = False
    attach_stdout: bool = False
    attach_stderr: bool = False
    exposed_ports: tuple[str, ...] = ()  # "80/tcp"
    volumes: tuple[str, ...] = ()
    stop_signal: str = ""
    stop_timeout: int | None = None
    network_disabled: bool = False
    mac_address: str = ""
    endpoints: tuple[EndpointSpec, ...] = ()  # NetworkingConfig
    healthcheck: HealthConfig | None = None


@dataclass(frozen=True)
class EngineState:
    """The Docker-level state the core does not keep (persisted with the record).

    ``extra`` is the Docker-only part of the container's state (paused, restarting, removing; None: the core's
    state says it all): written only through ``Registry.transition`` (pkg.model.state's table), read whole by
    ``EngineContainer.status``. A removal cut short by a crash is finished on start."""

    extra: DockerState | None = None
    started_once: bool = False
    manually_stopped: bool = False  # moby's HasBeenManuallyStopped: the restart policy stands down
    restart_count: int = 0
    error: str = ""  # the last start error (State.Error)
    remove_volumes: bool = False  # with REMOVING: the removal takes the anonymous volumes along (rm -v, --rm)
    health: Health | None = None  # the health check's last state (kept across narwhald restarts)

    @property
    def paused(self) -> bool:
        return self.extra == DockerState.PAUSED

    @property
    def restarting(self) -> bool:
        """Waiting out the restart backoff."""
        return self.extra == DockerState.RESTARTING

    @property
    def removing(self) -> bool:
        return self.extra == DockerState.REMOVING


@dataclass(frozen=True)
class LegacyLink:
    """A default-bridge --link (pkg.docker.engine.links): the linked container, by ID, and its alias here."""

    container_id: str
    alias: str


@dataclass(frozen=True)
class EngineRecord:
    """Everything the engine persists about one Docker container."""

    id: str
    name: str  # without the leading "/"
    sandbox_id: str
    owns_sandbox: bool  # False for --network container:<id> (it joins that container's sandbox)
    image_id: str
    created: int  # ns since the epoch
    config: ContainerSpec
    host_config: HostConfig
    port_bindings: tuple[PortBinding, ...] = ()  # resolved: ephemeral host ports filled in
    log_path: str = ""
    mount_points: tuple[MountPoint, ...] = ()  # every mount as resolved at create (inspect's Mounts)
    links: tuple[LegacyLink, ...] = ()  # default-bridge links, resolved at create
    state: EngineState = field(default_factory=EngineState)
    version: int = RECORD_VERSION


Status = DockerState  # Docker's State.Status (pkg.model.state: the table)


@dataclass(frozen=True)
class NetworkInfo:
    """One network the container is on, as inspect and ps show it."""

    name: str
    ip: str = ""
    prefix_len: int = 0
    gateway: str = ""
    mac: str = ""
    aliases: tuple[str, ...] = ()
    links: tuple[str, ...] = ()  # the endpoint's Links ("name:alias")
    ipv6: str = ""
    ipv6_prefix_len: int = 0
    ipv6_gateway: str = ""


@dataclass(frozen=True)
class EngineContainer:
    """The facade's view: the record plus the core's live status."""

    record: EngineRecord
    core: ContainerStatus
    networks: tuple[NetworkInfo, ...] = ()
    health: Health | None = None  # only for a container with a health check that has run since its start
    links: tuple[str, ...] = ()  # HostConfig.Links as moby shows them: "/<linked>:/<this>/<alias>"
    link_names: tuple[str, ...] = ()  # "/<linking>/<alias>": the names other containers' links give it

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def sandbox_id(self) -> str:
        return self.record.sandbox_id

    @property
    def image_id(self) -> str:
        return self.record.image_id

    @property
    def created(self) -> int:
        return self.record.created

    @property
    def config(self) -> ContainerSpec:
        return self.record.config

    @property
    def host_config(self) -> HostConfig:
        return self.record.host_config

    @property
    def restart_count(self) -> int:
        return self.record.state.restart_count

    @property
    def running(self) -> bool:
        return self.core.state == ContainerState.RUNNING

    @property
    def status(self) -> Status:
        return docker_state(self.core.state, self.record.state.extra)


class WaitCondition(enum.Enum):
    """What ``docker wait`` waits for (its ``condition``)."""

    NOT_RUNNING = "not-running"
    NEXT_EXIT = "next-exit"
    REMOVED = "removed"


@dataclass(frozen=True)
class WaitResult:
    """What it answers: the exit code, and the error of a start that failed."""

    status_code: int
    error: str = ""
