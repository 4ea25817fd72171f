"""Docker container JSON out: the engine's containers in inspect and list shapes (swagger ContainerConfig,
HostConfig, ContainerInspectResponse, ContainerSummary).  Request bodies are read in containers_request.py."""
from __future__ import annotations

import shlex
import time
from typing import Any

from dockerapi import times
from dockerapi.backends import endpoint_id
from dockerapi.handlers.volumes import mount_point_json
from pkg.docker.engine.model import EngineContainer, EngineRecord, Status
from pkg.docker.volumes.model import MountSpec, MountType

Json = dict[str, Any]


def timestamp(ns: int) -> str:
    """A container time; 0 (never) is Go's zero time."""
    return times.rfc3339_fixed(ns) if ns else times.ZERO_TIME


def _port_map(c: EngineContainer) -> dict[str, list[Json] | None]:
    ports: dict[str, list[Json] | None] = {p: None for p in c.config.exposed_ports}
    for b in c.record.port_bindings:
        ports.setdefault(f"{b.container_port}/{b.protocol}", None)
        bound = ports[f"{b.container_port}/{b.protocol}"] or []
        bound.append({"HostIp": b.host_ip or "0.0.0.0", "HostPort": str(b.host_port)})
        ports[f"{b.container_port}/{b.protocol}"] = bound
    return ports


def config_json(c: EngineContainer) -> Json:
    spec = c.config
    out: Json = {
        "Hostname": spec.hostname or ("" if c.host_config.network_mode == "host" else c.id[:12]),
        "Domainname": spec.domainname,
        "User": spec.user,
        "AttachStdin": spec.attach_stdin,
        "AttachStdout": spec.attach_stdout,
        "AttachStderr": spec.attach_stderr,
        "Tty": spec.tty,
        "OpenStdin": spec.open_stdin,
        "StdinOnce": spec.stdin_once,
        "Env": list(spec.env),
        "Cmd": list(spec.cmd) or None,
        "Image": spec.image,
        "Volumes": {v: {} for v in spec.volumes} or None,
        "WorkingDir": spec.working_dir,
        "Entrypoint": list(spec.entrypoint) or None,
        "OnBuild": None,
        "Labels": dict(spec.labels),
    }
    if spec.exposed_ports:
        out["ExposedPorts"] = {p: {} for p in spec.exposed_ports}
    if spec.stop_signal:
        out["StopSignal"] = spec.stop_signal
    if spec.stop_timeout is not None:
        out["StopTimeout"] = spec.stop_timeout
    if spec.healthcheck is not None:
        hc = spec.healthcheck
        out["Healthcheck"] = {"Test": list(hc.test), "Interval": hc.interval_ns, "Timeout": hc.timeout_ns,
                              "Retries": hc.retries, "StartPeriod": hc.start_period_ns}
    return out


def host_config_json(c: EngineContainer) -> Json:
    h = c.host_config
    r = h.resources
    port_bindings: dict[str, list[Json]] = {}
    for b in h.port_bindings:
        port_bindings.setdefault(f"{b.container_port}/{b.protocol}", []).append(
            {"HostIp": b.host_ip, "HostPort": str(b.host_port) if b.host_port else ""})
    mounts = [_mount_json(m) for m in h.mounts]
    return {
        "Binds": list(h.binds) or None,
        "ContainerIDFile": "",
        "LogConfig": {"Type": h.log_config.type, "Config": dict(h.log_config.config)},
        "NetworkMode": h.network_mode,
        "PortBindings": port_bindings,
        "RestartPolicy": {"Name": h.restart_policy.name.value,
                          "MaximumRetryCount": h.restart_policy.maximum_retry_count},
        "AutoRemove": h.auto_remove,
        "VolumeDriver": h.volume_driver,
        "VolumesFrom": list(h.volumes_from) or None,
        "CapAdd": list(h.cap_add) or None,
        "CapDrop": list(h.cap_drop) or None,
        "CgroupnsMode": h.cgroupns_mode or "host",
        "Dns": list(h.dns),
        "DnsOptions": list(h.dns_options),
        "DnsSearch": list(h.dns_search),
        "ExtraHosts": list(h.extra_hosts) or None,
        "GroupAdd": list(h.group_add) or None,
        "IpcMode": h.ipc_mode or "private",
        "Cgroup": "",
        "Links": list(c.links) or None,
        "OomScoreAdj": h.oom_score_adj,
        "PidMode": h.pid_mode,
        "Privileged": h.privileged,
        "PublishAllPorts": h.publish_all_ports,
        "ReadonlyRootfs": h.readonly_rootfs,
        "SecurityOpt": list(h.security_opt) or None,
        "Tmpfs": dict(h.tmpfs) or None,
        "UTSMode": h.uts_mode,
        "UsernsMode": "",
        "ShmSize": h.shm_size or 64 << 20,
        "Sysctls": dict(h.sysctls) or None,
        "Runtime": "runc",
        "Isolation": h.isolation,
        "CpuShares": r.cpu_shares,
        "Memory": r.memory,
        "NanoCpus": r.nano_cpus,
        "CgroupParent": "",
        "BlkioWeight": 0,
        "BlkioWeightDevice": None,
        "BlkioDeviceReadBps": None,
        "BlkioDeviceWriteBps": None,
        "BlkioDeviceReadIOps": None,
        "BlkioDeviceWriteIOps": None,
        "CpuPeriod": r.cpu_period,
        "CpuQuota": r.cpu_quota,
        "CpuRealtimePeriod": 0,
        "CpuRealtimeRuntime": 0,
        "CpusetCpus": r.cpuset_cpus,
        "CpusetMems": r.cpuset_mems,
        "Devices": [{"PathOnHost": d.path_on_host, "PathInContainer": d.path_in_container,
                     "CgroupPermissions": d.cgroup_permissions} for d in h.devices],
        "DeviceCgroupRules": list(h.device_cgroup_rules) or None,
        "DeviceRequests": None,
        "MemoryReservation": r.memory_reservation,
        "MemorySwap": r.memory_swap,
        "MemorySwappiness": None,
        "OomKillDisable": False,
        "PidsLimit": r.pids_limit or None,
        "Ulimits": [{"Name": u.name, "Soft": u.soft, "Hard": u.hard} for u in h.ulimits] or None,
        "CpuCount": 0,
        "CpuPercent": 0,
        "IOMaximumIOps": 0,
        "IOMaximumBandwidth": 0,
        "Mounts": mounts or None,
        "Init": h.init,
        "MaskedPaths": None,
        "ReadonlyPaths": None,
    }


def _mount_json(m: MountSpec) -> Json:
    """A HostConfig.Mounts entry as given (--mount)."""
    out: Json = {"Type": m.type.value, "Target": m.target}
    if m.source:
        out["Source"] = m.source
    if m.read_only:
        out["ReadOnly"] = True
    if m.propagation:
        out["BindOptions"] = {"Propagation": m.propagation}
    if m.no_copy or m.volume_labels or m.volume_options or m.subpath:
        out["VolumeOptions"] = {"NoCopy": m.no_copy, "Labels": dict(m.volume_labels) or None}
        if m.subpath:
            out["VolumeOptions"]["Subpath"] = m.subpath
    if m.type is MountType.TMPFS and (m.tmpfs_size or m.tmpfs_mode):
        out["TmpfsOptions"] = {k: v for k, v in (("SizeBytes", m.tmpfs_size), ("Mode", m.tmpfs_mode)) if v}
    return out


def mounts_json(c: EngineContainer) -> list[Json]:
    return [mount_point_json(mp) for mp in c.record.mount_points]


def state_json(c: EngineContainer) -> Json:
    core, state = c.core, c.record.state
    status = c.status
    out: Json = {
        "Status": status.value,
        "Running": c.running or status == Status.RESTARTING,  # moby: a restarting container counts as running
        "Paused": status == Status.PAUSED,
        "Restarting": status == Status.RESTARTING,
        "OOMKilled": core.reason == "OOMKilled",
        "Dead": status == Status.DEAD,
        "Pid": core.pid if c.running else 0,
        "ExitCode": core.exit_code,
        "Error": state.error,
        "StartedAt": timestamp(core.started_at),
        "FinishedAt": timestamp(core.finished_at),
    }
    if c.health is not None:
        out["Health"] = {
            "Status": c.health.status.value,
            "FailingStreak": c.health.failing_streak,
            "Log": [{"Start": timestamp(r.start), "End": timestamp(r.end), "ExitCode": r.exit_code,
                     "Output": r.output} for r in c.health.log],
        }
    return out


def _network_json(c: EngineContainer, ids: dict[str, str] | None = None, dns_names: bool = False) -> dict[str, Json]:
    """NetworkSettings.Networks; ``dns_names`` (API 1.44+): moby's DNSNames on user-defined networks."""
    out: dict[str, Json] = {}
    for net in c.networks:
        network_id = (ids or {}).get(net.name, "")
        endpoint = endpoint_id(c.sandbox_id, network_id) if network_id else ""
        names = None
        if dns_names and net.name not in ("bridge", "host", "none"):
            names = list(dict.fromkeys([c.name, *net.aliases, c.id[:12], c.config.hostname or c.id[:12]]))
        spec = next((e for e in c.config.endpoints if e.network == net.name), None)
        out[net.name] = {
            "IPAMConfig": _ipam_json(c, net.name), "Links": list(net.links) or None,
            "Aliases": list(net.aliases) or None,
            "MacAddress": net.mac, "DriverOpts": dict(spec.driver_opts) if spec and spec.driver_opts else None,
            "NetworkID": network_id, "EndpointID": endpoint, "Gateway": net.gateway, "IPAddress": net.ip,
            "IPPrefixLen": net.prefix_len, "IPv6Gateway": net.ipv6_gateway, "GlobalIPv6Address": net.ipv6,
            "GlobalIPv6PrefixLen": net.ipv6_prefix_len, "DNSNames": names,
        }
    return out


def _ipam_json(c: EngineContainer, network: str) -> Json | None:
    """The endpoint's IPAMConfig as requested at create (moby: each field omitted when empty; none = null)."""
    spec = next((e for e in c.config.endpoints if e.network == network), None)
    if spec is None or not (spec.ipv4_address or spec.ipv6_address or spec.link_local_ips):
        return None
    out: Json = {}
    if spec.ipv4_address:
        out["IPv4Address"] = spec.ipv4_address
    if spec.ipv6_address:
        out["IPv6Address"] = spec.ipv6_address
    if spec.link_local_ips:
        out["LinkLocalIPs"] = list(spec.link_local_ips)
    return out


def inspect_json(c: EngineContainer, sandbox_dir: str, netns: str, network_ids: dict[str, str] | None = None,
                 driver: str = "overlayfs", dns_names: bool = True) -> Json:
    first = c.networks[0] if c.networks else None
    args = [*c.config.entrypoint, *c.config.cmd]
    return {
        "Id": c.id,
        "Created": timestamp(c.created),
        "Path": args[0] if args else "",
        "Args": args[1:],
        "State": state_json(c),
        "Image": c.image_id,
        "ResolvConfPath": f"{sandbox_dir}/resolv.conf",
        "HostnamePath": f"{sandbox_dir}/hostname",
        "HostsPath": f"{sandbox_dir}/hosts",
        "LogPath": "" if c.host_config.log_config.type == "none" else c.record.log_path,
        "Name": "/" + c.name,
        "RestartCount": c.restart_count,
        "Driver": driver,
        "Platform": "linux",
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "ExecIDs": None,
        "HostConfig": host_config_json(c),
        "GraphDriver": {"Data": None, "Name": driver},
        "Mounts": mounts_json(c),
        "Config": config_json(c),
        "NetworkSettings": {
            "Bridge": "",
            "SandboxID": c.sandbox_id,
            "SandboxKey": netns,
            "HairpinMode": False,
            "LinkLocalIPv6Address": "",
            "LinkLocalIPv6PrefixLen": 0,
            "Ports": _port_map(c),
            "SecondaryIPAddresses": None,
            "SecondaryIPv6Addresses": None,
            "EndpointID": "",
            "Gateway": first.gateway if first else "",
            "GlobalIPv6Address": first.ipv6 if first else "",
            "GlobalIPv6PrefixLen": first.ipv6_prefix_len if first else 0,
            "IPAddress": first.ip if first else "",
            "IPPrefixLen": first.prefix_len if first else 0,
            "IPv6Gateway": "",
            "MacAddress": first.mac if first else "",
            "Networks": _network_json(c, network_ids, dns_names),
        },
    }


# docker ps builds every container's summary at each call (issue 21): the parts only the record decides are
# made once per record.  A record is replaced, never changed, by every update, so ``is`` tells a stale entry.
# The JSON kept here is shared by the responses that use it: read it, never change it.
_RECORD_PARTS: dict[str, tuple[EngineRecord, Json]] = {}
_RECORD_PARTS_MAX = 4096


def _record_parts(c: EngineContainer) -> Json:
    record = c.record
    kept = _RECORD_PARTS.get(record.id)
    if kept is not None and kept[0] is record:
        return kept[1]
    args = [*c.config.entrypoint, *c.config.cmd]
    ports: list[Json] = []
    for b in record.port_bindings:
        ports.append({"IP": b.host_ip or "0.0.0.0", "PrivatePort": b.container_port, "PublicPort": b.host_port,
                      "Type": b.protocol})
    bound = {(b.container_port, b.protocol) for b in record.port_bindings}
    for exposed in c.config.exposed_ports:
        port, _, proto = exposed.partition("/")
        if (int(port), proto) not in bound:
            ports.append({"PrivatePort": int(port), "Type": proto})
    parts: Json = {
        "Image": c.config.image,
        "ImageID": c.image_id,
        "Command": " ".join(shlex.quote(a) if " " in a else a for a in args),
        "Created": c.created // 1_000_000_000,
        "Ports": ports,
        "Labels": dict(c.config.labels),
        "HostConfig": {"NetworkMode": c.host_config.network_mode},
        "Mounts": mounts_json(c),
    }
    if len(_RECORD_PARTS) >= _RECORD_PARTS_MAX:  # records of removed containers go in bulk
        _RECORD_PARTS.clear()
    _RECORD_PARTS[record.id] = (record, parts)
    return parts


def summary_json(c: EngineContainer, now: float | None = None) -> Json:
    parts = _record_parts(c)
    return {
        "Id": c.id,
        "Names": ["/" + c.name, *c.link_names],
        "Image": parts["Image"],
        "ImageID": parts["ImageID"],
        "Command": parts["Command"],
        "Created": parts["Created"],
        "Ports": parts["Ports"],
        "Labels": parts["Labels"],
        "State": c.status.value,
        "Status": status_text(c, now),
        "HostConfig": parts["HostConfig"],
        "NetworkSettings": {"Networks": _network_json(c)},
        "Mounts": parts["Mounts"],
    }


def status_text(c: EngineContainer, now: float | None = None) -> str:
    """``docker ps``'s STATUS column (moby's State.String)."""
    now = time.time() if now is None else now
    core = c.core
    status = c.status
    if status in (Status.RUNNING, Status.PAUSED):
        text = f"Up {human_duration(now - core.started_at / 1e9)}"
        if status == Status.PAUSED:
            return text + " (Paused)"
        if c.health is not None:
            value = c.health.status.value
            return text + (" (health: starting)" if value == "starting" else f" ({value})")
        return text
    if status == Status.RESTARTING:
        return f"Restarting ({core.exit_code}) {human_duration(now - core.finished_at / 1e9)} ago"
    if status == Status.REMOVING:
        return "Removal In Progress"
    if status == Status.DEAD:
        return "Dead"
    if status == Status.CREATED or not core.finished_at:
        return "Created"
    return f"Exited ({core.exit_code}) {human_duration(now - core.finished_at / 1e9)} ago"


def human_duration(seconds: float) -> str:
    """go-units HumanDuration."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = s // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = round(s / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{hours // 24 // 365} years"
