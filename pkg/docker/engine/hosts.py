"""A Docker container's /etc/hosts: moby's (pkg.docker.networks.resolv.docker_hosts) for a container with its
own network namespace, the host's own plus the --add-host lines for a host-network one."""
from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from pkg import errors
from pkg.docker.engine import extra_hosts as extra_hosts_entries
from pkg.docker.engine.model import EngineRecord
from pkg.docker.networks import resolv

HOST_GATEWAY = extra_hosts_entries.HOST_GATEWAY  # moby's special --add-host value


async def write(path: Path, record: EngineRecord, ips: Sequence[str], gateway: str = "") -> None:
    """Write the sandbox's hosts file (``ips``: the container's addresses, every network's; ``gateway``: the
    address ``host-gateway`` stands for)."""
    extra = extra_hosts(record.host_config.extra_hosts, gateway)
    if record.host_config.network_mode == "host":
        if extra:
            await asyncio.to_thread(_append, path, extra)
        return
    spec = record.config
    content = resolv.docker_hosts(spec.hostname or record.id[:12], spec.domainname, ips, extra)
    await asyncio.to_thread(resolv.write_in_place, path, content)


def extra_hosts(entries: tuple[str, ...], gateway: str = "") -> list[tuple[str, str]]:
    """Docker's --add-host "name:ip" (or "name=ip") entries as (ip, name); ``host-gateway`` is ``gateway``."""
    out = []
    for entry in entries:
        host, ip = extra_hosts_entries.parse(entry)  # validated: no line of its own can reach the file
        if ip == HOST_GATEWAY:
            if not gateway:
                raise errors.InvalidArgument("unable to derive the IP value for host-gateway")
            ip = gateway
        out.append((ip, host))
    return out


def _append(path: Path, extra: list[tuple[str, str]]) -> None:
    """--add-host lines appended to a host-network container's /etc/hosts (the host's own)."""
    with open(path, "a") as f:
        f.writelines(f"{ip}\t{name}\n" for ip, name in extra)
