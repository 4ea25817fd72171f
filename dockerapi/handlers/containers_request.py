"""Docker container JSON in: the create and update bodies as pkg.docker.engine's typed model (swagger
ContainerConfig, HostConfig, NetworkingConfig), with Docker's messages for bad input."""
from __future__ import annotations

import re
from typing import Any

from dockerapi.handlers.volumes import mount_spec
from dockerapi.params import mapping, string_list
from pkg import errors
from pkg.docker.engine.links import check_links
from pkg.docker.engine.model import (
    ContainerSpec,
    DeviceMapping,
    EndpointSpec,
    HealthConfig,
    HostConfig,
    LogConfig,
    PortBinding,
    Resources,
    RestartPolicy,
    RestartPolicyName,
    Ulimit,
)
from pkg.runtime.spec_mounts import cgroup_rule

Json = dict[str, Any]


def _int(body: Json, key: str) -> int:
    value = body.get(key) or 0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise errors.InvalidArgument(f"{key} must be a number")
    if isinstance(value, float) and not value.is_integer() or not -(1 << 63) <= value < (1 << 63):
        # Go decodes these fields as int64.
        raise errors.InvalidArgument(f"json: cannot unmarshal number {value} into Go struct field {key} of type int64")
    return int(value)


def container_spec(body: Json) -> ContainerSpec:
    image = body.get("Image")
    if not isinstance(image, str) or not image:
        raise errors.InvalidArgument("config cannot be empty in order to create a container"
                                     if not body else "no image specified")
    stop_timeout = body.get("StopTimeout")
    endpoints = []
    net = mapping(mapping(body.get("NetworkingConfig"), "NetworkingConfig").get("EndpointsConfig"), "EndpointsConfig")
    for name, endpoint in net.items():
        # "default" is the bridge network on Linux (the docker CLI names it so for --mac-address, --ip).
        endpoints.append(endpoint_spec("bridge" if name == "default" else str(name), endpoint,
                                       f"EndpointsConfig.{name}"))
    return ContainerSpec(
        image=image,
        cmd=string_list(body.get("Cmd"), "Cmd"),
        entrypoint=string_list(body.get("Entrypoint"), "Entrypoint"),
        env=string_list(body.get("Env"), "Env"),
        labels={str(k): str(v) for k, v in mapping(body.get("Labels"), "Labels").items()},
        working_dir=str(body.get("WorkingDir") or ""),
        user=str(body.get("User") or ""),
        hostname=str(body.get("Hostname") or ""),
        domainname=str(body.get("Domainname") or ""),
        tty=bool(body.get("Tty")),
        open_stdin=bool(body.get("OpenStdin")),
        stdin_once=bool(body.get("StdinOnce")),
        attach_stdin=bool(body.get("AttachStdin")),
        attach_stdout=bool(body.get("AttachStdout")),
        attach_stderr=bool(body.get("AttachStderr")),
        exposed_ports=tuple(_port_key(p) for p in mapping(body.get("ExposedPorts"), "ExposedPorts")),
        volumes=tuple(mapping(body.get("Volumes"), "Volumes")),
        stop_signal=str(body.get("StopSignal") or ""),
        stop_timeout=int(stop_timeout) if isinstance(stop_timeout, int) else None,
        network_disabled=bool(body.get("NetworkDisabled")),
        mac_address=mac_address(body.get("MacAddress")),
        endpoints=tuple(endpoints),
        healthcheck=_healthcheck(body.get("Healthcheck")),
    )


def endpoint_spec(network: str, value: Any, what: str = "EndpointConfig") -> EndpointSpec:
    """An EndpointSettings body (create's EndpointsConfig entries, connect's EndpointConfig)."""
    endpoint = mapping(value, what)
    ipam = mapping(endpoint.get("IPAMConfig"), "IPAMConfig")
    return EndpointSpec(network, tuple(dict.fromkeys(string_list(endpoint.get("Aliases"), "Aliases"))),
                        str(ipam.get("IPv4Address") or ""), str(ipam.get("IPv6Address") or ""),
                        string_list(ipam.get("LinkLocalIPs"), "LinkLocalIPs"),
                        check_links(string_list(endpoint.get("Links"), "Links")),
                        mac_address=mac_address(endpoint.get("MacAddress")),
                        driver_opts={str(k): str(v)
                                     for k, v in mapping(endpoint.get("DriverOpts"), "DriverOpts").items()})


_MAC = re.compile(r"^[0-9A-Fa-f]{2}([:-])[0-9A-Fa-f]{2}(\1[0-9A-Fa-f]{2}){4}$")


def mac_address(value: Any) -> str:
    """A MAC address as moby's net.ParseMAC takes it (6 bytes), normalised to lower case with colons."""
    mac = str(value or "")
    if mac and not _MAC.match(mac):
        raise errors.InvalidArgument(f"invalid MAC address {mac}")
    return mac.lower().replace("-", ":")


def _healthcheck(value: Any) -> HealthConfig | None:
    if value is None:
        return None
    raw = mapping(value, "Healthcheck")
    for key in ("Interval", "Timeout", "StartPeriod"):
        if _int(raw, key) < 0 or 0 < _int(raw, key) < 1_000_000:
            raise errors.InvalidArgument(f"{key} in Healthcheck cannot be less than 1ms")
    if _int(raw, "Retries") < 0:
        raise errors.InvalidArgument("Retries in Healthcheck cannot be negative")
    return HealthConfig(string_list(raw.get("Test"), "Healthcheck.Test"), _int(raw, "Interval"), _int(raw, "Timeout"),
                        _int(raw, "Retries"), _int(raw, "StartPeriod"))


def _port_key(key: str) -> str:
    port, _, proto = key.partition("/")
    if not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise errors.InvalidArgument(f"invalid port specification: \"{key}\"")
    return f"{int(port)}/{(proto or 'tcp').lower()}"


def restart_policy(value: Any) -> RestartPolicy:
    policy = mapping(value, "RestartPolicy")
    name = str(policy.get("Name") or "no")
    try:
        kind = RestartPolicyName(name)
    except ValueError:
        raise errors.InvalidArgument(
            f"invalid restart policy: unknown policy '{name}'; use one of 'no', 'always', 'on-failure', or "
            "'unless-stopped'") from None
    return RestartPolicy(kind, _int(policy, "MaximumRetryCount"))


def resources(body: Json) -> Resources:
    return Resources(
        memory=_int(body, "Memory"),
        memory_swap=_int(body, "MemorySwap"),
        memory_reservation=_int(body, "MemoryReservation"),
        nano_cpus=_int(body, "NanoCpus"),
        cpu_shares=_int(body, "CpuShares"),
        cpu_period=_int(body, "CpuPeriod"),
        cpu_quota=_int(body, "CpuQuota"),
        cpuset_cpus=str(body.get("CpusetCpus") or ""),
        cpuset_mems=str(body.get("CpusetMems") or ""),
        pids_limit=_int(body, "PidsLimit"),
    )


def host_config(body: Json) -> HostConfig:
    links = check_links(string_list(body.get("Links"), "Links"))
    binds = string_list(body.get("Binds"), "Binds")
    mounts = [mount_spec(raw) for raw in body.get("Mounts") or []]
    tmpfs = {str(k): str(v or "") for k, v in mapping(body.get("Tmpfs"), "Tmpfs").items()}
    ports: list[PortBinding] = []
    for key, bindings in mapping(body.get("PortBindings"), "PortBindings").items():
        port, _, proto = _port_key(key).partition("/")
        for binding in bindings or [{}]:
            binding = mapping(binding, "PortBindings[]")
            host_port = str(binding.get("HostPort") or "")
            if host_port and (not (host_port.isascii() and host_port.isdigit()) or not 0 < int(host_port) < 65536):
                raise errors.InvalidArgument(f"invalid port specification: \"{host_port}\"")
            ports.append(PortBinding(int(port), proto, str(binding.get("HostIp") or ""),
                                     int(host_port) if host_port else 0))
    devices = []
    for raw in body.get("Devices") or []:
        dev = mapping(raw, "Devices[]")
        devices.append(DeviceMapping(str(dev.get("PathOnHost") or ""), str(dev.get("PathInContainer") or ""),
                                     str(dev.get("CgroupPermissions") or "rwm")))
    network_mode = str(body.get("NetworkMode") or "bridge")
    init = body.get("Init")
    return HostConfig(
        binds=binds,
        mounts=tuple(mounts),
        tmpfs=tmpfs,
        port_bindings=tuple(ports),
        publish_all_ports=bool(body.get("PublishAllPorts")),
        network_mode="bridge" if network_mode == "default" else network_mode,
        restart_policy=restart_policy(body.get("RestartPolicy")),
        auto_remove=bool(body.get("AutoRemove")),
        resources=resources(body),
        cap_add=string_list(body.get("CapAdd"), "CapAdd"),
        cap_drop=string_list(body.get("CapDrop"), "CapDrop"),
        privileged=bool(body.get("Privileged")),
        devices=tuple(devices),
        init=bool(init) if init is not None else None,
        dns=string_list(body.get("Dns"), "Dns"),
        dns_search=string_list(body.get("DnsSearch"), "DnsSearch"),
        dns_options=string_list(body.get("DnsOptions"), "DnsOptions"),
        extra_hosts=string_list(body.get("ExtraHosts"), "ExtraHosts"),
        readonly_rootfs=bool(body.get("ReadonlyRootfs")),
        security_opt=string_list(body.get("SecurityOpt"), "SecurityOpt"),
        shm_size=_int(body, "ShmSize"),
        sysctls={str(k): str(v) for k, v in mapping(body.get("Sysctls"), "Sysctls").items()},
        oom_score_adj=_int(body, "OomScoreAdj"),
        ulimits=tuple(_ulimit(mapping(u, "Ulimits[]")) for u in body.get("Ulimits") or []),
        pid_mode=str(body.get("PidMode") or ""),
        ipc_mode=str(body.get("IpcMode") or ""),
        log_config=log_config(body.get("LogConfig")),
        group_add=tuple(str(g) for g in string_list(body.get("GroupAdd"), "GroupAdd")),
        device_cgroup_rules=_cgroup_rules(body.get("DeviceCgroupRules")),
        isolation=_isolation(body.get("Isolation")),
        volume_driver=str(body.get("VolumeDriver") or ""),
        links=links,
        cgroupns_mode=str(body.get("CgroupnsMode") or ""),
        uts_mode=str(body.get("UTSMode") or ""),
        volumes_from=string_list(body.get("VolumesFrom"), "VolumesFrom"),
    )


# The options each log driver takes (moby daemon/logger/<driver>: ValidateLogOpt); "none" takes any.
LOG_OPTS = {
    "json-file": frozenset({"max-file", "max-size", "compress", "labels", "labels-regex", "env", "env-regex",
                            "tag"}),
    "local": frozenset({"max-file", "max-size", "compress"}),
}


def log_config(value: Any) -> LogConfig:
    """HostConfig.LogConfig checked as moby's ValidateLogOpts does; no type = the daemon's default, json-file."""
    raw = mapping(value, "LogConfig")
    kind = str(raw.get("Type") or "json-file")
    options = {str(k): str(v) for k, v in mapping(raw.get("Config"), "LogConfig.Config").items()}
    if kind != "none" and kind not in LOG_OPTS:
        raise errors.InvalidArgument(f"logger: no log driver named '{kind}' is registered")
    for key in options:
        if kind != "none" and key not in LOG_OPTS[kind] and key not in ("mode", "max-buffer-size"):
            raise errors.InvalidArgument(f"unknown log opt '{key}' for {kind} log driver")
    return LogConfig(kind, options)


def _cgroup_rules(value: Any) -> tuple[str, ...]:
    rules = string_list(value, "DeviceCgroupRules")
    for rule in rules:
        cgroup_rule(rule)  # moby's format check, at create
    return rules


def _isolation(value: Any) -> str:
    isolation = str(value or "")
    if isolation.lower() not in ("", "default"):
        raise errors.InvalidArgument(f"invalid isolation '{isolation}' on linux")
    return isolation


def _ulimit(raw: Json) -> Ulimit:
    name = str(raw.get("Name") or "")
    if not name:
        raise errors.InvalidArgument("invalid ulimit: Name must not be empty")
    return Ulimit(name, _int(raw, "Soft"), _int(raw, "Hard"))
