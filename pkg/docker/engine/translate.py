"""From a Docker container's config to the core's: image defaults merged in (as Docker stores them),
then the sandbox config (network, ports, DNS, hostname) and the container config (process, mounts,
resources, security)."""
from __future__ import annotations

import dataclasses
import re
import shutil
import socket
from collections.abc import Sequence
from pathlib import Path

from pkg import errors
from pkg.cni.model import NetworkAttachment, PortMapping
from pkg.docker.engine.links import merge_env
from pkg.docker.engine.model import (
    ContainerSpec,
    EndpointSpec,
    EngineRecord,
    HealthConfig,
    HostConfig,
    LogConfig,
    PortBinding,
)
from pkg.docker.engine.model import Resources as DockerResources
from pkg.docker.networks.resolv import docker_dns_config, embedded_dns_config
from pkg.images.model import ImageConfig, ImageHealthcheck
from pkg.model.container import ContainerConfig, ContainerSecurity, Device, LogRotation, Mount, Resources
from pkg.model.sandbox import DNSConfig, NamespaceMode, NamespaceOptions, SandboxConfig
from pkg.runtime.resources import Rlimit
from pkg.runtime.seccomp import RUNTIME_DEFAULT, UNCONFINED, ProfileType, SecurityProfile

DOCKER_NAMESPACE = "docker"  # SandboxConfig.namespace of every Docker sandbox
ENGINE_LABEL = "io.narwhal.engine.container"  # on the sandbox: the Docker container that owns it
INIT_PATH = "/sbin/docker-init"
CPU_PERIOD = 100_000  # µs, NanoCpus are turned into a quota over this period


def merge_image(spec: ContainerSpec, image: ImageConfig) -> ContainerSpec:
    """Docker's create-time merge: unset Cmd/Entrypoint/WorkingDir/User/StopSignal come from the image,
    env and labels are the image's overridden by the container's, exposed ports and volumes are joined."""
    entrypoint, cmd = spec.entrypoint, spec.cmd
    if not entrypoint:
        entrypoint = tuple(image.entrypoint)
        if not cmd:
            cmd = tuple(image.cmd)
    env = _merge_env(image.env, spec.env)
    return dataclasses.replace(
        spec,
        entrypoint=entrypoint,
        cmd=cmd,
        env=tuple(env),
        labels={**image.labels, **spec.labels},
        working_dir=spec.working_dir or image.working_dir,
        user=spec.user or image.user,
        stop_signal=spec.stop_signal or image.stop_signal,
        exposed_ports=tuple(dict.fromkeys([*image.exposed_ports, *spec.exposed_ports])),
        volumes=tuple(dict.fromkeys([*image.volumes, *spec.volumes])),
        healthcheck=_merge_healthcheck(spec.healthcheck, image.healthcheck),
    )


def _merge_healthcheck(own: HealthConfig | None, image: ImageHealthcheck | None) -> HealthConfig | None:
    """moby's merge: no check asked for -> the image's; one asked for -> its unset fields from the image's."""
    if image is None:
        return own
    if own is None:
        return HealthConfig(tuple(image.test), image.interval_ns, image.timeout_ns, image.retries,
                            image.start_period_ns)
    return HealthConfig(own.test or tuple(image.test), own.interval_ns or image.interval_ns,
                        own.timeout_ns or image.timeout_ns, own.retries or image.retries,
                        own.start_period_ns or image.start_period_ns)


def _merge_env(base: list[str], override: tuple[str, ...]) -> list[str]:
    merged: dict[str, str] = {}
    for entry in [*base, *override]:
        merged[entry.split("=", 1)[0]] = entry
    return list(merged.values())


def argv(spec: ContainerSpec) -> list[str]:
    args = [*spec.entrypoint, *spec.cmd]
    if not args:
        raise errors.InvalidArgument("no command specified")
    return args


def resolve_ports(spec: ContainerSpec, host: HostConfig) -> tuple[PortBinding, ...]:
    """The published ports with every ephemeral host port chosen (PublishAllPorts publishes each exposed
    port on one)."""
    bindings = list(host.port_bindings)
    if host.publish_all_ports:
        bound = {(b.container_port, b.protocol) for b in bindings}
        for exposed in spec.exposed_ports:
            port, proto = parse_port(exposed)
            if (port, proto) not in bound:
                bindings.append(PortBinding(port, proto))
    resolved = []
    for b in bindings:
        resolved.append(b if b.host_port else dataclasses.replace(b, host_port=_free_port(b.protocol, b.host_ip)))
    return tuple(resolved)


def parse_port(text: str) -> tuple[int, str]:
    """"80/tcp" or "80" → (80, "tcp")."""
    port, _, proto = text.partition("/")
    try:
        number = int(port)
    except ValueError:
        raise errors.InvalidArgument(f"invalid port {text!r}") from None
    proto = (proto or "tcp").lower()
    if not 0 < number < 65536 or proto not in ("tcp", "udp", "sctp"):
        raise errors.InvalidArgument(f"invalid port {text!r}")
    return number, proto


def _free_port(protocol: str, host_ip: str) -> int:
    """An unused host port from the kernel's ephemeral range (Docker's port allocator picks from it too)."""
    kind = socket.SOCK_DGRAM if protocol == "udp" else socket.SOCK_STREAM
    family = socket.AF_INET6 if ":" in host_ip else socket.AF_INET
    with socket.socket(family, kind) as s:
        s.bind((host_ip or "", 0))
        return int(s.getsockname()[1])


def sandbox_config(record: EngineRecord, log_directory: Path) -> SandboxConfig:
    spec, host = record.config, record.host_config
    mode = host.network_mode
    network = NamespaceMode.NODE if mode == "host" else NamespaceMode.POD
    networks: tuple[NetworkAttachment, ...] = ()
    primary = "bridge" if mode == "default" else mode
    own = next((e for e in spec.endpoints if e.network == primary), EndpointSpec(primary))
    # Config.MacAddress (deprecated in API 1.44) is the NetworkMode endpoint's MAC, as moby migrates it.
    mac = own.mac_address or spec.mac_address
    if mode not in ("bridge", "default", "host", "none"):
        # The NetworkMode network first (eth0, the default route), then any other EndpointsConfig entry
        # (API 1.44+ creates a container on several networks at once).
        networks = (NetworkAttachment(mode, own.aliases, own.ipv4_address, own.links, mac=mac,
                                      ipv6=own.ipv6_address),) + tuple(
            NetworkAttachment(e.network, e.aliases, e.ipv4_address, e.links, mac=e.mac_address,
                              ipv6=e.ipv6_address)
            for e in spec.endpoints if e.network != mode)
    elif primary == "bridge" and mac:
        networks = (NetworkAttachment("bridge", mac=mac),)
    dns = None
    if host.dns or host.dns_search or host.dns_options:
        dns = DNSConfig(tuple(host.dns), tuple(host.dns_search), tuple(host.dns_options))
    if mode in ("bridge", "default", "none"):
        dns = docker_dns_config(dns)  # the host's, minus what a container cannot reach, as moby writes it
    elif networks and primary != "bridge":
        # On a user-defined network the embedded DNS server answers (names, aliases; the rest it
        # forwards to the --dns servers or the host's), as Docker's 127.0.0.11.
        dns = embedded_dns_config(dns)
    return SandboxConfig(
        name=record.name,
        uid=record.id,
        namespace=DOCKER_NAMESPACE,
        hostname="" if mode == "host" else spec.hostname or record.id[:12],
        log_directory=str(log_directory),
        dns=dns,
        port_mappings=[PortMapping(b.container_port, b.host_port, b.protocol, b.host_ip)
                       for b in record.port_bindings] if mode != "host" else [],
        labels={ENGINE_LABEL: record.id},
        sysctls=dict(host.sysctls),
        namespace_options=NamespaceOptions(network=network, pid=NamespaceMode.CONTAINER,
                                           ipc=NamespaceMode.NODE if host.ipc_mode == "host" else NamespaceMode.POD,
                                           uts=NamespaceMode.NODE if host.uts_mode == "host" else NamespaceMode.POD),
        privileged=host.privileged,
        networks=networks,
        no_network=mode == "none",
        shm_size=host.shm_size,
    )


def container_config(record: EngineRecord, log_path: str, mounts: list[Mount],
                     groups: Sequence[int] = (), link_env: Sequence[str] = ()) -> ContainerConfig:
    """``mounts``: the container's binds, volumes and tmpfs, resolved (pkg.docker.engine.mounts); ``groups``: its
    GroupAdd as gids (pkg.docker.engine.groups); ``link_env``: its legacy links' variables
    (pkg.docker.engine.links), which its own Env overrides and inspect does not show."""
    spec, host = record.config, record.host_config
    command = argv(spec)
    mounts = list(mounts)
    if host.init:
        init = shutil.which("catatonit") or "/usr/bin/catatonit"
        mounts.append(Mount(INIT_PATH, init, readonly=True))
        command = [INIT_PATH, "--", *command]
    run_as_username = spec.user
    no_new_privs, seccomp_profile = security_options(host)
    return ContainerConfig(
        name=record.name,
        image=record.image_id,
        command=command,
        working_dir=spec.working_dir,
        envs=[(e.split("=", 1)[0], e.split("=", 1)[1] if "=" in e else "") for e in merge_env(link_env, spec.env)],
        mounts=mounts,
        devices=[Device(d.path_in_container or d.path_on_host, d.path_on_host, d.cgroup_permissions or "rwm")
                 for d in host.devices] + [Device("", "", cgroup_rule=rule) for rule in host.device_cgroup_rules],
        labels=dict(spec.labels),
        log_path=log_path,
        log_rotation=log_rotation(host.log_config),
        stdin=spec.open_stdin,
        stdin_once=spec.stdin_once,
        tty=spec.tty,
        resources=core_resources(host.resources, host.oom_score_adj),
        security=ContainerSecurity(
            privileged=host.privileged,
            capabilities_add=list(host.cap_add),
            capabilities_drop=list(host.cap_drop),
            namespace_options=NamespaceOptions(
                pid=NamespaceMode.NODE if host.pid_mode == "host" else NamespaceMode.CONTAINER),
            run_as_username=run_as_username,
            supplemental_groups=list(groups),
            readonly_rootfs=host.readonly_rootfs,
            no_new_privs=no_new_privs,
            seccomp=seccomp_profile,
            cgroupns=host.cgroupns_mode == "private" if host.cgroupns_mode else None,
            apparmor=apparmor_option(host),
        ),
        rlimits=[Rlimit(u.name, u.soft, u.hard) for u in host.ulimits],
    )


# The local driver rotates by default (moby daemon/logger/local: 20 MB, 5 files, compressed).
LOCAL_DEFAULTS = {"max-size": "20m", "max-file": "5", "compress": "true"}
_SIZE = re.compile(r"^(\d+(?:\.\d+)?) ?([kKmMgGtTpP])?[iI]?[bB]?$")


def log_rotation(config: LogConfig) -> LogRotation | None:
    """The json-file/local ``max-size``/``max-file``/``compress`` options checked as moby's drivers do;
    None when the log is one growing file."""
    if config.type not in ("json-file", "local"):
        return None
    opts = {**(LOCAL_DEFAULTS if config.type == "local" else {}), **config.config}
    max_size = _ram_in_bytes(opts["max-size"]) if opts.get("max-size") else 0
    try:
        max_files = int(opts.get("max-file") or 1)
    except ValueError:
        raise errors.InvalidArgument(f"invalid max-file: {opts['max-file']!r}") from None
    if max_files < 1:
        raise errors.InvalidArgument("max-file cannot be less than 1")
    compress = _bool(opts.get("compress") or "false", "compress")
    if compress and (max_files < 2 or not max_size):
        raise errors.InvalidArgument("compress cannot be true when max-file is less than 2 or max-size is not set")
    return LogRotation(max_size, max_files, compress) if max_size else None


def _ram_in_bytes(text: str) -> int:
    """go-units RAMInBytes: "10m", "1.5g", "512k", "100" (binary multiples)."""
    match = _SIZE.match(text.strip())
    if match is None:
        raise errors.InvalidArgument(f"invalid size: '{text}'")
    unit = (match.group(2) or "").lower()
    return int(float(match.group(1)) * 1024 ** " kmgtp".index(unit or " "))


def _bool(text: str, what: str) -> bool:
    """Go's strconv.ParseBool."""
    if text in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if text in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    raise errors.InvalidArgument(f"{what}: strconv.ParseBool: parsing {text!r}: invalid syntax")


def security_options(host: HostConfig) -> tuple[bool, SecurityProfile | None]:
    """(no_new_privs, seccomp) from --security-opt; Docker confines with its default seccomp profile unless
    the container is privileged or asks for seccomp=unconfined."""
    no_new_privs = False
    seccomp: SecurityProfile | None = None if host.privileged else RUNTIME_DEFAULT
    for option in host.security_opt:
        key, sep, value = option.replace(":", "=", 1).partition("=")
        if key == "no-new-privileges":
            if value not in ("", "true", "false"):
                raise errors.InvalidArgument(f"invalid --security-opt 2: {option!r}")
            no_new_privs = value != "false"
        elif key == "seccomp":
            if value != "unconfined":
                raise errors.InvalidArgument("custom seccomp profiles are not supported (only seccomp=unconfined)")
            seccomp = UNCONFINED
        elif key in ("apparmor", "label", "systempaths", "writable-cgroups") and sep:
            continue  # no AppArmor or SELinux here; accepted and ignored as Docker does where they are off
        else:
            raise errors.InvalidArgument(f"invalid --security-opt 1: {option!r}")
    return no_new_privs, seccomp


def apparmor_option(host: HostConfig) -> SecurityProfile | None:
    """``--security-opt apparmor=X``: Unconfined, a profile by name (refused where AppArmor is off, see
    seccomp.apparmor_profile), or None for the default profile where AppArmor is on."""
    for option in host.security_opt:
        key, sep, value = option.replace(":", "=", 1).partition("=")
        if key == "apparmor" and sep:
            return UNCONFINED if value == "unconfined" else SecurityProfile(ProfileType.LOCALHOST, value)
    return None


def core_resources(r: DockerResources, oom_score_adj: int = 0) -> Resources:
    period, quota = r.cpu_period, r.cpu_quota
    if r.nano_cpus:
        if r.cpu_quota or r.cpu_period:
            raise errors.InvalidArgument("Conflicting options: Nano CPUs and CPU Period cannot both be set")
        period = CPU_PERIOD
        quota = r.nano_cpus * CPU_PERIOD // 1_000_000_000
    if r.memory and 0 < r.memory < 6 * 1024 * 1024:
        raise errors.InvalidArgument("Minimum memory limit allowed is 6MB")
    swap = 0
    if r.memory:
        swap = -1 if r.memory_swap == -1 else (r.memory_swap or 2 * r.memory)
        if 0 < swap < r.memory:
            raise errors.InvalidArgument(
                "Minimum memoryswap limit should be larger than memory limit, see usage")
    return Resources(
        cpu_period=period,
        cpu_quota=quota,
        cpu_shares=r.cpu_shares,
        memory_limit_in_bytes=r.memory,
        memory_swap_limit_in_bytes=swap,
        cpuset_cpus=r.cpuset_cpus,
        cpuset_mems=r.cpuset_mems,
        pids_limit=r.pids_limit if r.pids_limit > 0 else 0,
        oom_score_adj=oom_score_adj or None,
    )
