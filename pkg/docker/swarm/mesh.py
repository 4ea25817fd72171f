"""The routing mesh on this node: a service's published ingress ports answer on every local address,
balanced across the service's running tasks on every node.

Moby does this with an ``ingress`` overlay network, a hidden sandbox and IPVS.  Narwhal's tasks join
``ingress`` too (the agent attaches them, first, as swarmkit's allocator does), and the node keeps the
rest in two nat-table chains per narwhald instance (so ``swarm leave`` and ``narwhald cleanup`` remove
exactly ours):

- ``NW-MESH-<instance>`` (jumped to from PREROUTING and OUTPUT for destinations that are local
  addresses): per published port, DNAT to the tasks' ingress addresses, one rule per task with
  ``-m statistic --mode nth`` so that new connections go round robin over the tasks of all nodes;
- ``NW-MESHMQ-<instance>`` (from POSTROUTING): those connections source-NATed to this node's own
  endpoint on ingress (moby's ``ingress-sbox`` address; allocation.py), which sits on the node's ingress
  bridge with the MAC peers derive from it: a task on another node answers to that address over the
  overlay, back to this node, whose conntrack turns it into the answer to the client.

While any ingress port is published, a filter-table chain ``NW-MESHFWD-<instance>`` (jumped to from the top
of FORWARD, as moby's ``DOCKER-INGRESS``) accepts the forwarded packets of the mesh's connections, both ways,
so that the mesh works on a host whose FORWARD policy is DROP; it accepts nothing else.

The rules are level-triggered: ``plan`` computes them from the services and tasks in the store and
``Mesh.apply`` rewrites the chains in one ``iptables-restore --noflush`` only when they changed.

A task's address is the one its ``NetworksAttachments`` give on ``ingress`` (the agent writes them with
the running state); a task of this node without one is reached at its container's first address
(masqueraded); a remote task without one is not a backend.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pkg import errors
from pkg.docker.swarm import allocation, ipam, networks
from pkg.docker.swarm.executor import Executor
from pkg.docker.swarm.store import Store

log = logging.getLogger(__name__)

Obj = dict[str, Any]

RUN_TIMEOUT = 60.0
POLL = 2.0
RELEASE_TIMEOUT = 10.0
INGRESS_NETWORK = "ingress"
# swarmkit's allocator hands out published ports from this range when none is given
DYNAMIC_PORTS = range(30000, 32768)


@dataclass(frozen=True)
class Published:
    """One published ingress port and where its connections go."""

    protocol: str  # tcp, udp, sctp
    port: int  # on every node
    target: int  # in the task
    backends: tuple[str, ...]  # task IPv4 addresses, stable order


def chains(instance_id: str) -> tuple[str, str]:
    """The DNAT chain and the masquerade chain of one narwhald instance."""
    return f"NW-MESH-{instance_id}", f"NW-MESHMQ-{instance_id}"


def forward_chain(instance_id: str) -> str:
    """The filter-table chain of one narwhald instance accepting the mesh's forwarded connections."""
    return f"NW-MESHFWD-{instance_id}"


def ingress_ports(service: Obj) -> list[Obj]:
    """The service's ports published in ingress mode (the default), as its Endpoint shows them."""
    ports = (service.get("Endpoint") or {}).get("Ports") or []
    return [p for p in ports if (p.get("PublishMode") or "ingress") == "ingress" and p.get("PublishedPort")]


def remote_address(task: Obj) -> str | None:
    """A task's address on the ingress overlay (its NetworksAttachments), for tasks of other nodes."""
    for attachment in task.get("NetworksAttachments") or []:
        if ((attachment.get("Network") or {}).get("Spec") or {}).get("Name") == INGRESS_NETWORK:
            for addr in attachment.get("Addresses") or []:
                return str(addr).split("/")[0]
    return None


def plan(services: list[Obj], tasks: list[Obj], node_id: str,
         local_address: Callable[[Obj], str | None]) -> list[Published]:
    """What the mesh of this node must do: every ingress port of every service to its running tasks, each at
    its ingress address (this node's tasks too); a task of this node without one (started before its
    service published a port, or with no ingress network) at its container's address."""
    out = []
    for service in services:
        ports = ingress_ports(service)
        if not ports:
            continue
        backends = []
        for task in sorted((t for t in tasks if t["ServiceID"] == service["ID"]),
                           key=lambda t: (t.get("Slot") or 0, t["ID"])):
            if task["DesiredState"] != "running" or task["Status"]["State"] != "running":
                continue
            addr = remote_address(task) or (local_address(task) if task.get("NodeID") == node_id else None)
            if addr:
                backends.append(addr)
        for p in ports:
            out.append(Published(protocol=p.get("Protocol") or "tcp", port=int(p["PublishedPort"]),
                                 target=int(p["TargetPort"]), backends=tuple(backends)))
    out.sort(key=lambda p: (p.port, p.protocol))
    return out


@dataclass(frozen=True)
class Source:
    """This node's endpoint on ingress: connections to tasks on that subnet leave from this address, so a task
    on another node answers over the overlay back to this node (not to its own bridge's gateway)."""

    subnet: str
    address: str

    def covers(self, addr: str) -> bool:
        return ipaddress.ip_address(addr) in ipaddress.ip_network(self.subnet)


def restore_input(instance_id: str, published: list[Published], source: Source | None = None) -> str:
    """The ``iptables-restore --noflush`` text that makes the chains hold exactly these rules (the filter
    chain only while some port is published: ``Mesh.apply`` deletes it when none is)."""
    dnat, masq = chains(instance_id)
    lines = ["*nat", f":{dnat} - [0:0]", f":{masq} - [0:0]"]
    fwd = forward_chain(instance_id)
    accept = [f":{fwd} - [0:0]"]
    for p in published:
        match = f"-p {p.protocol} -m {p.protocol} --dport {p.port}"
        if not p.backends:
            continue  # no task runs: nothing to balance over (the port answers nothing, as moby's)
        n = len(p.backends)
        for i, addr in enumerate(p.backends):
            # rule i sees the connections rules 0..i-1 did not take: every (n-i)th of them is its share
            nth = f" -m statistic --mode nth --every {n - i} --packet 0" if i < n - 1 else ""
            lines.append(f"-A {dnat} {match}{nth} -j DNAT --to-destination {addr}:{p.target}")
        for addr in dict.fromkeys(p.backends):
            nat = f"SNAT --to-source {source.address}" if source and source.covers(addr) else "MASQUERADE"
            lines.append(f"-A {masq} -p {p.protocol} -d {addr}/32 -m {p.protocol} --dport {p.target} "
                         f"-m conntrack --ctstate DNAT --ctorigdstport {p.port} -j {nat}")
            # FORWARD: the connections this chain DNATed to the task (to it, and its replies), nothing else
            conn = f"-m conntrack --ctstate DNAT --ctorigdstport {p.port} -j ACCEPT"
            accept.append(f"-A {fwd} -p {p.protocol} -d {addr}/32 -m {p.protocol} --dport {p.target} {conn}")
            accept.append(f"-A {fwd} -p {p.protocol} -s {addr}/32 -m {p.protocol} --sport {p.target} {conn}")
        # and the ICMP errors about them (moby's chain accepts RELATED too: a "fragmentation needed" on the way)
        accept.append(f"-A {fwd} -p icmp -m conntrack --ctstate RELATED --ctproto {p.protocol} "
                      f"--ctorigdstport {p.port} -j ACCEPT")
    lines.append("COMMIT")
    if published:
        lines += ["*filter", *accept, "COMMIT"]
    return "\n".join(lines) + "\n"


async def _run(*argv: str, stdin: bytes | None = None) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        _, err = await asyncio.wait_for(proc.communicate(stdin), RUN_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return -1, f"{argv[0]} did not finish within {RUN_TIMEOUT:g}s"
    return proc.returncode or 0, err.decode(errors="replace").strip()


# (chain the jump is in, match before -j): DNAT for local destinations, from outside and from the host
_JUMPS = (("PREROUTING", ("-m", "addrtype", "--dst-type", "LOCAL")),
          ("OUTPUT", ("-m", "addrtype", "--dst-type", "LOCAL")))


class Mesh:
    """This instance's chains: rewritten when the plan changes, removed on leave and cleanup."""

    def __init__(self, instance_id: str) -> None:
        self.instance_id = instance_id
        self.dnat, self.masq = chains(instance_id)
        self.fwd = forward_chain(instance_id)
        self._applied: tuple[list[Published], Source | None] | None = None
        self._localnet: set[str] = set()
        self._lock = asyncio.Lock()

    async def apply(self, published: list[Published], source: Source | None = None) -> None:
        async with self._lock:
            if (published, source) == self._applied:
                return
            if shutil.which("iptables-restore") is None:
                if published:
                    raise errors.FailedPrecondition("iptables is not installed: ingress ports cannot be published")
                return
            rc, err = await _run("iptables-restore", "-w", "--noflush",
                                 stdin=restore_input(self.instance_id, published, source).encode())
            if rc != 0:
                raise errors.Internal(f"iptables-restore of {self.dnat}: {err}")
            for chain, match in _JUMPS:
                await self._ensure_jump(chain, [*match, "-j", self.dnat])
            await self._ensure_jump("POSTROUTING", ["-j", self.masq])
            if published:
                await self._ensure_jump("FORWARD", ["-j", self.fwd], table="filter")
            else:
                await self._remove_forward()
            await self._route_localnet({a for p in published for a in p.backends})
            if published:
                await asyncio.to_thread(_enable_forwarding)
            self._applied = (list(published), source)
            log.info("swarm mesh: %d published port(s): %s", len(published),
                     ", ".join(f"{p.port}/{p.protocol} -> {len(p.backends)} task(s)" for p in published) or "none")

    async def _ensure_jump(self, chain: str, rule: list[str], table: str = "nat") -> None:
        if (await _run("iptables", "-w", "-t", table, "-C", chain, *rule))[0] == 0:
            return
        rc, err = await _run("iptables", "-w", "-t", table, "-I", chain, "1", *rule)
        if rc != 0:
            raise errors.Internal(f"iptables: jump from {chain} to {rule[-1]}: {err}")

    async def _route_localnet(self, addresses: set[str]) -> None:
        """127.0.0.1:<port> DNATed to a task leaves through the task's bridge: the kernel drops such
        packets as martians unless route_localnet is on for that device (as CNI's portmap sets it)."""
        for addr in sorted(addresses):
            rc, out = await _route_dev(addr)
            if rc != 0 or not out or out in self._localnet:
                continue
            path = Path(f"/proc/sys/net/ipv4/conf/{out}/route_localnet")
            try:
                await asyncio.to_thread(path.write_text, "1")
                self._localnet.add(out)
            except OSError as exc:
                log.warning("swarm mesh: cannot enable route_localnet on %s: %s", out, exc)

    async def _remove_forward(self) -> None:
        """The filter chain and its jump from FORWARD (no port published, leave, cleanup)."""
        while (await _run("iptables", "-w", "-t", "filter", "-D", "FORWARD", "-j", self.fwd))[0] == 0:
            pass
        await _run("iptables", "-w", "-t", "filter", "-F", self.fwd)
        await _run("iptables", "-w", "-t", "filter", "-X", self.fwd)

    async def remove(self) -> None:
        """Leave/cleanup: all three chains and their jumps go (only ours, by name)."""
        async with self._lock:
            if shutil.which("iptables") is None:
                return
            for chain, match in _JUMPS:
                while (await _run("iptables", "-w", "-t", "nat", "-D", chain, *match, "-j", self.dnat))[0] == 0:
                    pass
            while (await _run("iptables", "-w", "-t", "nat", "-D", "POSTROUTING", "-j", self.masq))[0] == 0:
                pass
            for name in (self.dnat, self.masq):
                await _run("iptables", "-w", "-t", "nat", "-F", name)
                await _run("iptables", "-w", "-t", "nat", "-X", name)
            await self._remove_forward()
            self._applied = None


class MeshSync:
    """The loop that keeps this node's mesh equal to the plan: woken on store changes, polling too.

    While some service publishes an ingress port, the node holds its own endpoint on ingress
    (allocation.py) and connections leave from it; ``endpoint_changed`` (the overlay's wake) makes the
    overlay put that address on the ingress bridge at once."""

    def __init__(self, store: Store, node_id: str, executor: Executor, mesh: Mesh,
                 endpoint_changed: Callable[[], None] = lambda: None) -> None:
        self.store = store
        self.node_id = node_id
        self.executor = executor
        self.mesh = mesh
        self.endpoint_changed = endpoint_changed
        self._endpoint: tuple[str, str] | None = None  # (ingress network ID, this node's address on it)
        self._settled = False  # whether _endpoint is known to match the store (not before the first pass)
        self._leaving = False
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def once(self) -> None:
        async with self._lock:
            if self._leaving:
                return
            services = await self.store.list("services")
            tasks = await self.store.list("tasks")
            containers = self.executor.containers()

            def local(task: Obj) -> str | None:
                cid = containers.get(task["ID"])
                return self.executor.address(cid) if cid else None

            published = plan(services, tasks, self.node_id, local)
            await self.mesh.apply(published, await self._source(bool(published)))

    async def _source(self, wanted: bool) -> Source | None:
        """This node's ingress endpoint: claimed while ports are published, given back when none is (also
        once after a start: a restarted daemon does not know what it held)."""
        ingress = allocation.ingress_network(await networks.all_networks(self.store))
        if not wanted or ingress is None:
            if self._endpoint is not None or not self._settled:
                if ingress is not None:
                    await ipam.release(self.store, ingress["ID"], allocation.node_owner(self.node_id))
                self._endpoint = None
                self._settled = True
                self.endpoint_changed()
            return None
        if self._endpoint is None or self._endpoint[0] != ingress["ID"]:
            address = await allocation.claim_node_endpoint(self.store, ingress, self.node_id)
            self._endpoint = (ingress["ID"], address)
            self._settled = True
            self.endpoint_changed()
        return Source(networks.pool(ingress)[0], self._endpoint[1])

    async def release(self) -> None:
        """Leaving: no more passes, and the node's ingress endpoint goes back to the pool (best effort: the
        store may be unreachable)."""
        self._leaving = True
        async with self._lock:
            if self._endpoint is None and self._settled:
                return  # holds none (no port published since the start): no store call on the way out
            try:
                await asyncio.wait_for(allocation.release_node_endpoint(self.store, self.node_id), RELEASE_TIMEOUT)
            except (errors.NarwhalError, TimeoutError) as exc:
                log.warning("swarm mesh: release of this node's ingress endpoint: %s", exc)
            self._endpoint = None

    async def run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.once()
            except errors.NarwhalError as exc:
                log.warning("swarm mesh: %s", exc.message)
            try:
                await asyncio.wait_for(self._wake.wait(), POLL)
            except TimeoutError:
                pass


def _enable_forwarding() -> None:
    """A connection from outside goes on to the ingress bridge: the node must forward (as dockerd and CNI's
    bridge plugin turn it on; a node running no task may have had no CNI ADD yet)."""
    path = Path("/proc/sys/net/ipv4/ip_forward")
    try:
        if path.read_text().strip() != "1":
            path.write_text("1")
    except OSError as exc:
        log.warning("swarm mesh: cannot enable IPv4 forwarding: %s", exc)


async def _route_dev(addr: str) -> tuple[int, str]:
    """The device the route to ``addr`` goes out of (``ip route get``)."""
    proc = await asyncio.create_subprocess_exec("ip", "-o", "route", "get", addr, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.DEVNULL)
    out, _ = await proc.communicate()
    words = out.decode(errors="replace").split()
    dev = words[words.index("dev") + 1] if "dev" in words[:-1] else ""
    return proc.returncode or 0, dev
