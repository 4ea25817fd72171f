"""/_ping, /version, /info, /system/df (the Swarm header and section come from the swarm backend)."""
from __future__ import annotations

import asyncio
import datetime
import os
from typing import Any

from aiohttp import web

from dockerapi import versions
from dockerapi.backend import Backends, backends
from dockerapi.backends import HostInfo
from dockerapi.handlers import system_df
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
    swarm = backends(request).swarm
    headers = {**_PING_HEADERS, "Api-Version": versions.API_VERSION,
               "Swarm": swarm.ping_state() if swarm is not None else "inactive"}
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


_NO_SWARM = {"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive", "ControlAvailable": False, "Error": "",
             "RemoteManagers": None}

# What a Docker client may see in Plugins; only what Narwhal serves.
_NETWORK_DRIVERS = ["bridge", "host", "null"]
_LOG_DRIVERS = ["json-file"]


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
        "Debug": host.debug,
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
        "Swarm": await b.swarm.info() if b.swarm is not None else _NO_SWARM,
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
    return counts




ROUTES = [
    ("GET", "/_ping", ping),
    ("HEAD", "/_ping", ping),
    ("GET", "/version", version),
    ("GET", "/info", info),
    ("GET", "/system/df", system_df.system_df),
]
