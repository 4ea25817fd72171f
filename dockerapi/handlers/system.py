"""/_ping, /version, /info, /system/df, and the Swarm answers of a node that is in none."""
from __future__ import annotations

import asyncio
import datetime
import os
import time
from typing import Any

from aiohttp import web

from dockerapi import versions
from dockerapi.backend import Backends, backends
from pkg import errors
from pkg.images import reference
from pkg.images.model import Image
from pkg.model.state import ContainerState
from pkg.system import HostInfo, writable_layer_sizes
from pkg.version import narwhal_version

_PING_HEADERS = {
    "Builder-Version": "1",
    "Docker-Experimental": "false",
    "Ostype": "linux",
    "Cache-Control": "no-cache, no-store, must-revalidate",
    "Pragma": "no-cache",
}


async def ping(request: web.Request) -> web.Response:
    body = None if request.method == "HEAD" else "OK"
    headers = {**_PING_HEADERS, "Api-Version": versions.API_VERSION, "Swarm": "inactive"}
    return web.Response(text=body, content_type="text/plain", headers=headers)


async def version(request: web.Request) -> web.Response:
    info = await backends(request).system.version()
    components: list[dict[str, Any]] = []
    for comp in info.components:
        details = dict(comp.details)
        if comp.name == "Engine":
            details.update(
                ApiVersion=versions.API_VERSION, MinAPIVersion=versions.MIN_API_VERSION,
                GitCommit="", GoVersion=info.python, KernelVersion=info.kernel,
                Experimental="false", BuildTime="",
            )
        components.append({"Name": comp.name, "Version": comp.version, "Details": details})
    return web.json_response(
        {
            "Platform": {"Name": f"Narwhal Engine {narwhal_version()}"},
            "Components": components,
            "Version": info.version,
            "ApiVersion": versions.API_VERSION,
            "MinAPIVersion": versions.MIN_API_VERSION,
            "GitCommit": "",
            "GoVersion": info.python,
            "Os": info.os,
            "Arch": info.arch,
            "KernelVersion": info.kernel,
            "BuildTime": "",
        }
    )


# What a Docker client may see in Plugins; only what Narwhal serves.
_NETWORK_DRIVERS = ["bridge", "host", "null"]
_LOG_DRIVERS = ["json-file"]
_DF_TYPES = ("container", "image", "volume", "build-cache")


async def info(request: web.Request) -> web.Response:
    b = backends(request)
    host: HostInfo = await b.system.info()
    counts = await _container_counts(b)
    images = len(await b.images.list()) if b.images is not None else 0
    features = host.cgroups
    body: dict[str, Any] = {
        "ID": host.id,
        "Containers": sum(counts.values()),
        "ContainersRunning": counts["running"],
        "ContainersPaused": counts["paused"],
        "ContainersStopped": counts["stopped"],
        "Images": images,
        "Driver": "overlayfs",
        "DriverStatus": [["driver-type", "io.containerd.snapshotter.v1"]],
        "DockerRootDir": host.root_dir,
        "Plugins": {"Volume": ["local"], "Network": _NETWORK_DRIVERS, "Authorization": None, "Log": _LOG_DRIVERS},
        "MemoryLimit": features.memory_limit,
        "SwapLimit": features.swap_limit,
        "KernelMemory": features.kernel_memory,
        "KernelMemoryTCP": features.kernel_memory_tcp,
        "CpuCfsPeriod": features.cpu_cfs_period,
        "CpuCfsQuota": features.cpu_cfs_quota,
        "CPUShares": features.cpu_shares,
        "CPUSet": features.cpuset,
        "PidsLimit": features.pids_limit,
        "OomKillDisable": features.oom_kill_disable,
        "IPv4Forwarding": host.ipv4_forwarding,
        "BridgeNfIptables": host.bridge_nf_iptables,
        "BridgeNfIp6tables": host.bridge_nf_ip6tables,
        "Debug": False,
        "NFd": _open_fds(),
        "NGoroutines": len(asyncio.all_tasks()),
        "SystemTime": datetime.datetime.now(datetime.UTC).astimezone().isoformat(timespec="microseconds"),
        "LoggingDriver": _LOG_DRIVERS[0],
        "CgroupDriver": host.cgroup_driver,
        "CgroupVersion": host.cgroup_version,
        "NEventsListener": b.events.subscribers if b.events is not None else 0,
        "KernelVersion": host.kernel,
        "OperatingSystem": host.operating_system,
        "OSVersion": host.os_version,
        "OSType": "linux",
        "Architecture": host.architecture,
        "NCPU": host.ncpu,
        "MemTotal": host.mem_total,
        "IndexServerAddress": "https://index.docker.io/v1/",
        "RegistryConfig": _registry_config(host),
        "GenericResources": None,
        "HttpProxy": os.environ.get("HTTP_PROXY", os.environ.get("http_proxy", "")),
        "HttpsProxy": os.environ.get("HTTPS_PROXY", os.environ.get("https_proxy", "")),
        "NoProxy": os.environ.get("NO_PROXY", os.environ.get("no_proxy", "")),
        "Name": host.name,
        "Labels": [],
        "ExperimentalBuild": False,
        "ServerVersion": host.server_version,
        "Runtimes": {name: {"path": path} for name, path in sorted(host.runtimes.items())},
        "DefaultRuntime": host.default_runtime,
        "Swarm": {"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive", "ControlAvailable": False,
                  "Error": "", "RemoteManagers": None},
        "LiveRestoreEnabled": True,  # containers outlive narwhald (containerd keeps them)
        "Isolation": "",
        "InitBinary": host.init_binary,
        "ContainerdCommit": {"ID": host.containerd_commit},
        "RuncCommit": {"ID": host.runc_commit},
        "InitCommit": {"ID": host.init_commit},
        "SecurityOptions": list(host.security_options),
        "CDISpecDirs": [],
        "Containerd": {"Address": "", "Namespaces": {"Containers": "", "Plugins": ""}},
        "Warnings": list(host.warnings),
    }
    if not versions.at_least(request, "1.44"):
        body["ContainerdCommit"]["Expected"] = host.containerd_commit
        body["RuncCommit"]["Expected"] = host.runc_commit
        body["InitCommit"]["Expected"] = host.init_commit
    return web.json_response(body)


def _registry_config(host: HostInfo) -> dict[str, Any]:
    hub = {"Name": "docker.io", "Mirrors": list(host.registry_mirrors), "Secure": True, "Official": True}
    index_configs: dict[str, Any] = {"docker.io": hub}
    for name in host.insecure_registries:
        if "/" not in name:  # host[:port]; CIDRs go to InsecureRegistryCIDRs
            index_configs[name] = {"Name": name, "Mirrors": [], "Secure": False, "Official": False}
    return {
        "AllowNondistributableArtifactsCIDRs": None,
        "AllowNondistributableArtifactsHostnames": None,
        "InsecureRegistryCIDRs": ["127.0.0.0/8", *(n for n in host.insecure_registries if "/" in n)],
        "IndexConfigs": index_configs,
        "Mirrors": list(host.registry_mirrors),
    }


def _open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


async def _container_counts(b: Backends) -> dict[str, int]:
    """running / paused / stopped Docker containers (paused is a Docker-level state the engine keeps)."""
    counts = {"running": 0, "paused": 0, "stopped": 0}
    if b.engine is not None:
        for container in b.engine.list():
            value = container.status.value
            counts[value if value in ("running", "paused") else "stopped"] += 1
    elif b.containers is not None:
        for _, core in b.containers.list():
            counts["running" if core.state == ContainerState.RUNNING else "stopped"] += 1
    return counts


# ---- /system/df ----
async def system_df(request: web.Request) -> web.Response:
    wanted = request.query.getall("type", [])
    for kind in wanted:
        if kind not in _DF_TYPES:
            raise errors.InvalidArgument(f"unknown object type: {kind}")
    want = set(wanted or _DF_TYPES)
    b = backends(request)
    containers = await _df_containers(b) if want & {"container", "image"} else []
    body: dict[str, Any] = {}
    if "image" in want:
        images = await b.images.list() if b.images is not None else []
        body["LayersSize"] = await _layers_size(b, containers)
        body["Images"] = await _df_images(request, b, images, containers)
    if "container" in want:
        body["Containers"] = containers
    if "volume" in want:
        body["Volumes"] = await _df_volumes(b)
    if "build-cache" in want:
        body["BuildCache"] = []
    return web.json_response(body)


async def _layers_size(b: Backends, containers: list[dict[str, Any]]) -> int:
    """Bytes of the snapshotter's store that are image layers (containers' writable layers taken out)."""
    if b.images is None:
        return 0
    usage = await b.images.fs_info()
    snapshots = usage[0].used_bytes if usage else 0
    return max(0, snapshots - sum(int(c.get("SizeRw") or 0) for c in containers))


async def _df_images(request: web.Request, b: Backends, images: list[Image],
                     containers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    assert b.images is not None
    users: dict[str, int] = {}
    for c in containers:
        users[c["ImageID"]] = users.get(c["ImageID"], 0) + 1
    layer_owners: dict[str, int] = {}
    for img in images:
        for diff_id in set(img.diff_ids):
            layer_owners[diff_id] = layer_owners.get(diff_id, 0) + 1
    result = []
    for img in images:
        try:
            size = await b.images.unpacked_size(img)
        except errors.NarwhalError:  # content gone under it (being removed): what the registry said
            size = img.size
        shares = any(layer_owners.get(d, 0) > 1 for d in img.diff_ids)
        entry: dict[str, Any] = {
            "Id": img.id, "ParentId": "", "RepoTags": [_familiar(t) for t in img.repo_tags],
            "RepoDigests": [_familiar(d) for d in img.repo_digests],
            "Created": _epoch(img.created), "Size": size, "SharedSize": -1 if shares else 0,
            "Labels": dict(img.config.labels),
            "Containers": users.get(img.id, 0),
        }
        if not versions.at_least(request, "1.44"):
            entry["VirtualSize"] = size
        result.append(entry)
    return result


async def _df_containers(b: Backends) -> list[dict[str, Any]]:
    if b.containers is None:
        return []
    core = {meta.id: (meta, status) for meta, status in b.containers.list()}
    sizes = await writable_layer_sizes(b.containers, [meta for meta, _ in core.values()])
    result = []
    if b.engine is not None:
        for ec in b.engine.list():
            cfg = ec.config
            command = " ".join([*cfg.entrypoint, *cfg.cmd])
            status = ec.status.value
            core_status = core.get(ec.id, (None, None))[1]
            result.append(_container_entry(
                ec.id, ["/" + ec.name], cfg.image, ec.image_id, command, ec.created, status,
                _human_status(status, core_status), sizes.get(ec.id, 0), dict(cfg.labels)))
    else:
        for meta, st in core.values():
            state = "running" if st.state == ContainerState.RUNNING else st.state.value
            result.append(_container_entry(
                meta.id, ["/" + meta.config.name], meta.image_ref, meta.image_id,
                " ".join([*meta.config.command, *meta.config.args]), meta.created_at, state,
                _human_status(state, st), sizes.get(meta.id, 0), dict(meta.config.labels)))
    return result


def _container_entry(cid: str, names: list[str], image: str, image_id: str, command: str, created_ns: int,
                     state: str, status: str, size_rw: int, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "Id": cid, "Names": names, "Image": image, "ImageID": image_id, "Command": command,
        "Created": created_ns // 1_000_000_000, "Ports": [], "SizeRw": size_rw, "SizeRootFs": 0,
        "Labels": labels, "State": state, "Status": status, "Mounts": [],
        "HostConfig": {"NetworkMode": "bridge"}, "NetworkSettings": {"Networks": {}},
    }


def _human_status(state: str, status: Any) -> str:
    """docker ps's Status column: "Up 3 minutes", "Exited (0) 2 seconds ago", "Created"."""
    now = time.time_ns()
    if state in ("running", "paused") and status is not None and status.started_at:
        text = f"Up {_human_duration(now - status.started_at)}"
        return text + " (Paused)" if state == "paused" else text
    if state in ("exited", "dead") and status is not None and status.finished_at:
        return f"Exited ({status.exit_code}) {_human_duration(now - status.finished_at)} ago"
    return state.capitalize()


def _human_duration(ns: int) -> str:
    """go-units HumanDuration."""
    seconds = max(0, ns // 1_000_000_000)
    if seconds < 1:
        return "Less than a second"
    if seconds == 1:
        return "1 second"
    if seconds < 60:
        return f"{seconds} seconds"
    minutes = seconds // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = round(seconds / 3600)
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


def _familiar(name: str) -> str:
    try:
        return reference.parse(name, default_tag=False).familiar()
    except errors.InvalidArgument:
        return name


def _epoch(created: str) -> int:
    if not created:
        return 0
    try:
        return int(datetime.datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return 0


async def _df_volumes(b: Backends) -> list[dict[str, Any]]:
    if b.volumes is None:
        return []
    usage = await b.volumes.usage()
    result = []
    for vol in b.volumes.list():
        use = usage.get(vol.name)
        result.append({
            "Name": vol.name, "Driver": vol.driver, "Mountpoint": vol.mountpoint, "CreatedAt": vol.created_at,
            "Labels": dict(vol.labels), "Scope": vol.scope, "Options": dict(vol.options),
            "UsageData": {"Size": use.size if use else -1, "RefCount": use.ref_count if use else 0},
        })
    return result


# ---- build cache: Narwhal builds nothing yet, so there is none to prune ----
async def build_prune(request: web.Request) -> web.Response:
    """``docker system prune`` ends with this; answer as a builder with an empty cache (moby's shape)."""
    return web.json_response({"CachesDeleted": [], "SpaceReclaimed": 0})


# ---- Swarm, as a node that is in none answers ----
async def swarm_inspect(request: web.Request) -> web.Response:
    raise errors.Unavailable('This node is not a swarm manager. Use "docker swarm init" or "docker swarm join" to '
                             "connect this node to swarm and try again.")


async def swarm_leave(request: web.Request) -> web.Response:
    raise errors.Unavailable("This node is not part of a swarm")


ROUTES = [
    ("GET", "/_ping", ping),
    ("HEAD", "/_ping", ping),
    ("GET", "/version", version),
    ("GET", "/info", info),
    ("GET", "/system/df", system_df),
    ("GET", "/swarm", swarm_inspect),
    ("POST", "/swarm/leave", swarm_leave),
    ("POST", "/build/prune", build_prune),
]
