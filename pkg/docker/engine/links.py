"""Docker's legacy links (``--link name:alias``, HostConfig.Links), as moby keeps them.

On the default bridge a link gives the container the linked container's address under the alias, its
name and its hostname (lines in /etc/hosts) and environment variables describing it (``ALIAS_PORT_80_TCP``,
``ALIAS_NAME``, ``ALIAS_ENV_*``); the linked container must be running when the container starts.  On a
user-defined network moby registers no legacy link at all: HostConfig.Links is accepted and ignored, and
the endpoint's own Links (NetworkingConfig) are names the embedded DNS resolves for this container only
(pkg.docker.networks.records).  The link is kept by the linked container's ID, so a rename follows it.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pkg import errors
from pkg.docker.engine.model import EngineRecord, HostConfig, LegacyLink
from pkg.docker.engine.registry import Registry


def parse(text: str) -> tuple[str, str]:
    """"name:alias" -> (name, alias); "name" -> (name, name); a leading "/" is dropped (moby's ParseLink)."""
    parts = text.split(":")
    if len(parts) > 2 or not parts[0].strip("/") or (len(parts) == 2 and not parts[1].strip("/")):
        raise errors.InvalidArgument(f"bad format for links: {text}")
    name = parts[0].lstrip("/")
    return name, (parts[1] if len(parts) == 2 else name).lstrip("/")


def check_links(links: Iterable[str]) -> tuple[str, ...]:
    """Links (HostConfig or endpoint) as given, each checked for the "name[:alias]" form."""
    out = tuple(links)
    for link in out:
        parse(link)
    return out


def _port_key(port: str) -> tuple[int, bool]:
    number, _, proto = port.partition("/")
    return int(number), (proto or "tcp").lower() != "tcp"  # by number, tcp first (moby's nat.Sort)


def _run_end(ports: Sequence[tuple[int, bool, str]], index: int) -> int:
    """The last index of the run starting at ``index`` (moby's nextContiguous: each next entry may be at most
    one more than the run's count so far, so a port listed for two protocols also continues it)."""
    value = ports[index][0]
    for i in range(index + 1, len(ports)):
        if ports[i][0] > value + 1:
            return i - 1
        value += 1
    return len(ports) - 1


def link_env(link_name: str, child_ip: str, child_env: Sequence[str], exposed_ports: Sequence[str]) -> list[str]:
    """The variables a link puts in the linking container's environment (moby's links.Link.ToEnv).

    ``link_name`` is "/<container>/<alias>"; ``exposed_ports`` are the linked container's ("80/tcp")."""
    alias = link_name.rsplit("/", 1)[-1].upper().replace("-", "_")
    ports = sorted((*_port_key(p), p.partition("/")[2] or "tcp") for p in exposed_ports)
    out: list[str] = []
    if ports:
        number, _, proto = ports[0]
        out.append(f"{alias}_PORT={proto}://{child_ip}:{number}")
    i = 0
    while i < len(ports):  # runs of consecutive port numbers are also given as a range
        j = _run_end(ports, i)
        if j > i:
            (first, _, proto), (last, _, last_proto) = ports[i], ports[j]
            key = f"{alias}_PORT_{first}_{proto.upper()}"
            out += [f"{key}_START={proto}://{child_ip}:{first}", f"{key}_ADDR={child_ip}", f"{key}_PROTO={proto}",
                    f"{key}_PORT_START={first}",
                    f"{alias}_PORT_{first}_{last_proto.upper()}_END={last_proto}://{child_ip}:{last}",
                    f"{alias}_PORT_{first}_{last_proto.upper()}_PORT_END={last}"]
            i = j + 1
        else:
            i += 1
    for number, _, proto in ports:
        key = f"{alias}_PORT_{number}_{proto.upper()}"
        out += [f"{key}={proto}://{child_ip}:{number}", f"{key}_ADDR={child_ip}", f"{key}_PORT={number}",
                f"{key}_PROTO={proto}"]
    out.append(f"{alias}_NAME={link_name}")
    for entry in child_env:
        key, sep, value = entry.partition("=")
        if sep and key not in ("HOME", "PATH"):  # set by builds, of no use to the linking container
            out.append(f"{alias}_ENV_{key}={value}")
    return out


def hosts_line(ip: str, alias: str, child_hostname: str, child_name: str) -> str:
    """The /etc/hosts line for a link: the alias, the linked container's hostname and (if not the alias) name."""
    names = [alias, child_hostname] + ([child_name] if child_name != alias else [])
    return f"{ip}\t{' '.join(names)}\n"


def merge_env(linked: Sequence[str], own_env: Sequence[str]) -> list[str]:
    """Link variables first; the container's own Env replaces any with the same name (as moby's ReplaceOrAppend)."""
    own_keys = {e.partition("=")[0] for e in own_env}
    return [e for e in linked if e.partition("=")[0] not in own_keys] + list(own_env)


@dataclass(frozen=True)
class Plan:
    """What a container's default-bridge links give it at create: the links, its env, its /etc/hosts lines."""

    links: tuple[LegacyLink, ...] = ()
    env: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()


def check_mode(host: HostConfig) -> None:
    """Links need a network of the container's own (moby's runconfig checks)."""
    if not host.links:
        return
    if host.network_mode == "host":
        raise errors.InvalidArgument("conflicting options: host type networking can't be used with links. This "
                                     "would result in undefined behavior")
    if host.network_mode.startswith("container:"):
        raise errors.InvalidArgument("conflicting options: container type network can't be used with links. This "
                                     "would result in undefined behavior")


def plan(registry: Registry, sandbox_ip: Callable[[str], str], host: HostConfig, name: str) -> Plan:
    """Resolve HostConfig.Links of a new container called ``name``; only the default bridge has legacy links.
    ``sandbox_ip``: a sandbox's address on the default network (a sandbox is wired from create on)."""
    if host.network_mode != "bridge" or not host.links:
        return Plan()
    found: dict[str, LegacyLink] = {}
    env: list[str] = []
    hosts: list[str] = []
    for text in host.links:
        target, alias = parse(text)
        try:
            child = registry.get(target)
        except errors.NotFound as exc:  # moby: invalid parameter, so the client does not look for an image
            raise errors.InvalidArgument(f"could not get container for {target}: {exc.message}") from None
        mode = child.host_config.network_mode
        if mode == "host":
            raise errors.InvalidArgument("conflicting options: host type networking can't be used with links. "
                                         "This would result in undefined behavior")
        if mode != "bridge":
            raise errors.InvalidArgument(f"Cannot link to /{child.name}, as it does not belong to the default network")
        ip = sandbox_ip(child.sandbox_id)
        found[alias] = LegacyLink(child.id, alias)
        env += link_env(f"/{name}/{alias}", ip, child.config.env, child.config.exposed_ports)
        if ip:
            hosts.append(hosts_line(ip, alias, child.config.hostname or child.id[:12], child.name))
    return Plan(tuple(found.values()), tuple(env), tuple(hosts))


def shown(record: EngineRecord, registry: Registry) -> tuple[str, ...]:
    """HostConfig.Links as moby's inspect shows them, "/<linked>:/<this>/<alias>", for linked containers that
    still exist (under their current names)."""
    out = []
    for link in record.links:
        child = registry.find(link.container_id)
        if child is not None:
            out.append(f"/{child.name}:/{record.name}/{link.alias}")
    return tuple(out)


def check_running(record: EngineRecord, registry: Registry, running: Callable[[str], bool]) -> None:
    """A container starts only while the containers it links to run (moby fails its start with a 500); a
    linked container that was removed took its link along (moby's linkIndex.delete)."""
    for link in record.links:
        child = registry.find(link.container_id)
        if child is not None and not running(child.id):
            raise errors.Internal(f"Cannot link to a non running container: /{child.name} AS "
                                  f"/{record.name}/{link.alias}")


def append_hosts(path: Path, lines: Sequence[str]) -> None:
    with open(path, "a") as f:
        f.writelines(lines)


def names_of(container_id: str, registry: Registry) -> tuple[str, ...]:
    """The link names a container is also known by, "/<linking>/<alias>" (moby's ps Names lists them)."""
    return names_by_container(registry).get(container_id, ())


def names_by_container(registry: Registry) -> dict[str, tuple[str, ...]]:
    """``names_of`` for every linked container at once (a listing asks for all of them)."""
    out: dict[str, tuple[str, ...]] = {}
    for record in registry:
        for link in record.links:
            out[link.container_id] = (*out.get(link.container_id, ()), f"/{record.name}/{link.alias}")
    return out


async def remove(registry: Registry, path: str) -> None:
    """DELETE /containers/<linking>/<alias>?link=1: drop that link and keep both containers (moby's rmLink);
    a running container's environment and /etc/hosts stay as they were."""
    parent_ref, _, alias = path.strip("/").rpartition("/")
    if not parent_ref:
        registry.resolve(alias)  # moby looks the container up first: an unknown name is its 404
        raise errors.Internal("Conflict, cannot remove the default link name of the container")
    try:
        parent: EngineRecord | None = registry.get(parent_ref)
    except errors.NotFound:
        parent = None
    if parent is None or not any(link.alias == alias for link in parent.links):
        raise errors.NotFound(f"No such container: {path.strip('/')}")
    async with registry.lock(parent.id):
        await registry.update(parent.id, lambda r: dataclasses.replace(
            r, links=tuple(link for link in r.links if link.alias != alias)))
