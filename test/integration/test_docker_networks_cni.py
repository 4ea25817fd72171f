"""Docker networks at the core: several CNI networks per sandbox, connect/disconnect, isolation,
internal networks, the embedded DNS server inside the netns, and what removal leaves (nothing).

The NetworkManager and NetworkService run in the test process against the real CNI plugins, with
network namespaces the test creates (as the sandboxes of the Docker domain would).
"""
from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from lib import nsexec
from lib.cni_host import HostGuard, free_port, start_server, stop_server
from lib.cni_net import Net
from lib.docker_networks import bridge_ports, chain_exists, link_exists, probe, tagged_rules

from pkg import errors
from pkg.cni import defaults, netns
from pkg.cni.model import Endpoint, NetworkAttachment, PodNetworkRequest, PortMapping
from pkg.docker.dns import message
from pkg.docker.networks import conflist
from pkg.docker.networks.model import CreateRequest, IPAMPool, Owner
from pkg.docker.networks.service import NetworkService


@pytest.fixture(scope="module")
def host_guard() -> Iterator[HostGuard]:
    guard = HostGuard.take()
    yield guard
    guard.restore()


def NO_UPSTREAM() -> list[str]:  # noqa: N802 - a constant-like stand-in
    """Forwarded queries go to loopback's port 53, where nothing listens: refused at once (the test host's
    resolvers may be unreachable, which would make every forwarded query wait out its timeout)."""
    return ["127.0.0.1"]


class FailingListener:
    def __init__(self, sandbox_id: str) -> None:
        self.sandbox_id = sandbox_id

    async def endpoints_changed(self, sandbox_id: str, netns_path: Path | None, endpoints: list[Endpoint]) -> None:
        if sandbox_id == self.sandbox_id and endpoints:
            raise errors.Internal("listener says no")


class Owners:
    """Sandbox "sb-x" belongs to container "x" (ID "x" * 12)."""

    def owner(self, sandbox_id: str, hint: Endpoint | None = None) -> Owner | None:
        name = sandbox_id.removeprefix("sb-")
        return Owner((name * 64)[:64], name)


class Env:
    def __init__(self, net: Net, service: NetworkService) -> None:
        self.net, self.service = net, service

    async def sandbox(self, sandbox_id: str, *networks: NetworkAttachment) -> PodNetworkRequest:
        req = self.net.req(sandbox_id, networks=networks)
        await netns.create(req.netns_path)
        await self.net.manager.setup(req)
        return req

    async def remove(self, req: PodNetworkRequest) -> None:
        await self.net.manager.teardown(req)
        await netns.remove(req.netns_path)


@pytest.fixture
async def env(host_guard: HostGuard) -> AsyncIterator[Env]:
    net = Net(Path(tempfile.mkdtemp(prefix="nwd-", dir="/tmp")), host_guard)
    service = NetworkService(net.cfg, net.manager, owners=Owners(), dns_upstream=NO_UPSTREAM)
    await net.manager.start()
    await service.start()
    yield Env(net, service)
    await service.stop()
    await net.manager.stop()
    for network in service.all():  # a failed test's leftovers
        if not network.predefined:
            host_guard.bridges.append(network.bridge)
    await service.isolation.sync([])
    shutil.rmtree(net.base, ignore_errors=True)


def addresses(ns: Path) -> dict[str, str]:
    """ifname -> IPv4 CIDR inside the netns."""
    out = subprocess.run(nsexec.argv(ns, "ip", "-o", "-4", "addr", "show"), capture_output=True, text=True,
                         check=True).stdout
    return {line.split()[1]: line.split()[3] for line in out.splitlines() if line.split()[1] != "lo"}


def in_netns(ns: Path, *cmd: str) -> str:
    return subprocess.run(nsexec.argv(ns, *cmd), capture_output=True, text=True, check=True).stdout


def link_line(ns: Path, ifname: str) -> str:
    return in_netns(ns, "ip", "-o", "link", "show", ifname)


def default_routes(ns: Path) -> list[str]:
    out = subprocess.run(nsexec.argv(ns, "ip", "-4", "route", "show", "default"), capture_output=True, text=True,
                         check=True).stdout
    return out.split()


async def resolve(ns: Path, name: str, qtype: int = message.TYPE_A, tcp: bool = False) -> tuple[int, list[str]]:
    """Ask 127.0.0.11 inside ``ns`` (the socket is made in the netns); (rcode, addresses)."""
    packet = message.HEADER.pack(7, message.FLAG_RD, 1, 0, 0, 0) + message.encode_name(name) + bytes(
        [0, qtype, 0, 1])

    def ask() -> bytes:
        if tcp:
            with socket.create_connection(("127.0.0.11", 53), timeout=5) as s:
                s.sendall(len(packet).to_bytes(2, "big") + packet)
                size = int.from_bytes(s.recv(2), "big")
                data = b""
                while len(data) < size:
                    data += s.recv(size - len(data))
                return data
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(5)
            s.sendto(packet, ("127.0.0.11", 53))
            return s.recv(4096)

    reply = await netns.run_in_netns(ns, ask)
    _, flags, qd, an, _, _ = message.HEADER.unpack_from(reply)
    offset = message.HEADER.size
    _, offset = message._read_name(reply, offset)  # noqa: SLF001
    offset += 4
    found = []
    for _ in range(an):
        _, offset = message._read_name(reply, offset)  # noqa: SLF001
        rtype, length = int.from_bytes(reply[offset:offset + 2], "big"), int.from_bytes(reply[offset + 8:offset + 10],
                                                                                         "big")
        rdata = reply[offset + 10:offset + 10 + length]
        offset += 10 + length
        if rtype == message.TYPE_A:
            found.append(socket.inet_ntoa(rdata))
    return flags & 0xF, found


def ip_of(cidr: str) -> str:
    return cidr.split("/")[0]


async def test_sandbox_on_several_networks(env: Env) -> None:
    mynet = await env.service.create(CreateRequest("mynet", ipam=(IPAMPool("10.201.5.0/24"),)))
    other = await env.service.create(CreateRequest("other"))
    a = await env.sandbox("sb-alpha", NetworkAttachment("mynet", ("web",)))
    b = await env.sandbox("sb-beta", NetworkAttachment("mynet"), NetworkAttachment("bridge"))
    c = await env.sandbox("sb-gamma", NetworkAttachment("other"))
    d = await env.sandbox("sb-delta")  # the default network only (as a CRI pod or `docker run` without --network)
    servers = [start_server(ns.netns_path, tok, 8080) for ns, tok in ((a, "alpha"), (c, "gamma"), (d, "delta"))]
    try:
        a_ips, b_ips = addresses(a.netns_path), addresses(b.netns_path)
        assert list(a_ips) == ["eth0"] and ip_of(a_ips["eth0"]).startswith("10.201.5.")
        assert sorted(b_ips) == ["eth0", "eth1"] and ip_of(b_ips["eth0"]).startswith("10.201.5.")
        assert ip_of(b_ips["eth1"]).startswith(env.net.subnet_prefix())
        assert "eth0" in default_routes(b.netns_path) and "eth1" not in default_routes(b.netns_path)
        assert link_exists(mynet.bridge) and len(bridge_ports(mynet.bridge)) == 2

        # Same network: reachable; another user-defined network: isolated, both ways.
        assert await probe(b.netns_path, ip_of(a_ips["eth0"]), 8080) == "alpha"
        gamma_ip = ip_of(addresses(c.netns_path)["eth0"])
        assert (await probe(a.netns_path, gamma_ip, 8080)).startswith("ERR")
        assert (await probe(c.netns_path, ip_of(a_ips["eth0"]), 8080)).startswith("ERR")
        assert (await probe(a.netns_path, ip_of(addresses(d.netns_path)["eth0"]), 8080)).startswith("ERR")
        # b is on the default network too: it reaches delta there.
        assert await probe(b.netns_path, ip_of(addresses(d.netns_path)["eth0"]), 8080) == "delta"

        # The embedded DNS server: names, aliases and short IDs on shared user-defined networks only.
        assert await resolve(b.netns_path, "alpha") == (0, [ip_of(a_ips["eth0"])])
        assert await resolve(b.netns_path, "web", tcp=True) == (0, [ip_of(a_ips["eth0"])])
        assert await resolve(b.netns_path, "alphaalphaal") == (0, [ip_of(a_ips["eth0"])])
        assert await resolve(a.netns_path, "beta.mynet") == (0, [ip_of(b_ips["eth0"])])
        assert await resolve(a.netns_path, "beta", message.TYPE_AAAA) == (0, [])
        assert not env.service.dns.running("sb-delta")  # the default bridge: no embedded DNS

        # connect / disconnect while running
        ep = await env.net.manager.connect(c, NetworkAttachment("mynet", ("g2",)))
        assert ep.ifname == "eth1" and ep.ip.startswith("10.201.5.") and ep.aliases == ("g2",)
        assert await resolve(a.netns_path, "g2") == (0, [ep.ip])
        assert await probe(c.netns_path, ip_of(a_ips["eth0"]), 8080) == "alpha"
        assert "eth1" not in default_routes(c.netns_path)
        names = {v.owner_name: v.ipv4 for v in env.service.endpoints(mynet)}
        assert names == {"alpha": a_ips["eth0"], "beta": b_ips["eth0"], "gamma": f"{ep.ip}/24"}
        await env.service.disconnect("mynet", "sb-gamma")
        assert list(addresses(c.netns_path)) == ["eth0"]
        assert (await resolve(a.netns_path, "g2"))[1] == []  # forwarded now, and no answer for it
        assert (await probe(c.netns_path, ip_of(a_ips["eth0"]), 8080)).startswith("ERR")
    finally:
        for proc in servers:
            stop_server(proc)
        for req in (a, b, c, d):
            await env.remove(req)

    assert not env.service.dns.running("sb-alpha")
    assert env.net.leftovers() == {k: [] for k in env.net.leftovers()}
    assert tagged_rules(mynet.cni_name) == [] and tagged_rules(other.cni_name) == []
    ipam = defaults.ipam_dir(env.net.cfg)
    assert not [p for p in ipam.rglob("*") if p.name[0].isdigit()]
    await env.service.remove("mynet")
    await env.service.remove("other")
    assert not link_exists(mynet.bridge) and not link_exists(other.bridge)
    assert not (ipam / mynet.cni_name).exists()
    assert not chain_exists(env.service.isolation.chain)


async def test_internal_network_has_no_way_out(env: Env) -> None:
    inner = await env.service.create(CreateRequest("inner", internal=True))
    i1 = await env.sandbox("sb-in1", NetworkAttachment("inner"))
    i2 = await env.sandbox("sb-in2", NetworkAttachment("inner"))
    d = await env.sandbox("sb-out")
    servers = [start_server(i1.netns_path, "in1", 8080), start_server(d.netns_path, "out", 8080)]
    try:
        assert default_routes(i1.netns_path) == []
        assert await probe(i2.netns_path, ip_of(addresses(i1.netns_path)["eth0"]), 8080) == "in1"
        assert (await probe(i1.netns_path, ip_of(addresses(d.netns_path)["eth0"]), 8080)).startswith("ERR")
        assert (await probe(d.netns_path, ip_of(addresses(i1.netns_path)["eth0"]), 8080)).startswith("ERR")
        assert await resolve(i2.netns_path, "in1") == (0, [ip_of(addresses(i1.netns_path)["eth0"])])
        assert (await resolve(i2.netns_path, "example.com"))[0] == message.RCODE_SERVFAIL  # nothing forwarded
    finally:
        for proc in servers:
            stop_server(proc)
        for req in (i1, i2, d):
            await env.remove(req)
    await env.service.remove(inner.id)
    assert env.net.leftovers() == {k: [] for k in env.net.leftovers()}


async def test_requested_address_and_failed_join_rolls_back(env: Env) -> None:
    await env.service.create(CreateRequest("fixed", ipam=(IPAMPool("10.201.7.0/24"),)))
    a = await env.sandbox("sb-fix", NetworkAttachment("fixed", (), "10.201.7.50"))
    try:
        assert addresses(a.netns_path) == {"eth0": "10.201.7.50/24"}
        # The address is taken: the second sandbox's setup fails and leaves nothing attached.
        req = env.net.req("sb-clash", networks=(NetworkAttachment("bridge"), NetworkAttachment("fixed", (),
                                                                                             "10.201.7.50")))
        await netns.create(req.netns_path)
        try:
            with pytest.raises(Exception, match="10.201.7.50"):
                await env.net.manager.setup(req)
            assert await env.net.manager.cache.ifnames("sb-clash") == []
            assert addresses(req.netns_path) == {}
        finally:
            await netns.remove(req.netns_path)
        with pytest.raises(Exception, match="not found"):
            await env.net.manager.setup(env.net.req("sb-x", networks=(NetworkAttachment("nosuch"),)))
        # A listener that fails (say, the DNS server cannot start) undoes the whole setup, listeners included.
        env.net.manager.listeners.append(FailingListener("sb-fail"))
        failing = env.net.req("sb-fail", networks=(NetworkAttachment("fixed"),))
        await netns.create(failing.netns_path)
        try:
            with pytest.raises(errors.Internal, match="listener says no"):
                await env.net.manager.setup(failing)
            assert await env.net.manager.cache.ifnames("sb-fail") == []
            assert "sb-fail" not in env.service.table() and not env.service.dns.running("sb-fail")
        finally:
            env.net.manager.listeners.pop()
            await netns.remove(failing.netns_path)
    finally:
        await env.remove(a)
    await env.service.remove("fixed")
    assert env.net.leftovers() == {k: [] for k in env.net.leftovers()}


async def test_gc_and_restart(env: Env) -> None:
    """A sandbox on two networks that nobody knows any more is released whole by the GC; a new service
    (narwhald restarted) finds the endpoints of live ones and restarts their DNS servers."""
    await env.service.create(CreateRequest("gcnet"))
    keep = await env.sandbox("sb-keep", NetworkAttachment("gcnet"))
    lost = await env.sandbox("sb-lost", NetworkAttachment("gcnet"), NetworkAttachment("bridge"))
    await env.service.dns.stop_all()
    again = NetworkService(env.net.cfg, env.net.manager, owners=Owners(), dns_upstream=NO_UPSTREAM)
    again.isolation = env.service.isolation
    await again.start()
    try:
        assert again.dns.running("sb-keep") and again.dns.running("sb-lost")
        assert await resolve(keep.netns_path, "lost") == (0, [ip_of(addresses(lost.netns_path)["eth0"])])
        await env.net.manager.gc({"sb-keep"})
        assert await env.net.manager.cache.ifnames("sb-lost") == []
        assert not again.dns.running("sb-lost") and again.dns.running("sb-keep")
        assert (await resolve(keep.netns_path, "lost"))[1] == []
    finally:
        await again.stop()
        await env.remove(keep)
        await netns.remove(lost.netns_path)
    await again.remove("gcnet")
    env.service = again
    assert env.net.leftovers() == {k: [] for k in env.net.leftovers()}
    await asyncio.sleep(0)


async def test_driver_options_icc_and_mtu(env: Env) -> None:
    await env.service.create(CreateRequest("quiet", options={"com.docker.network.bridge.enable_icc": "false",
                                                             "com.docker.network.driver.mtu": "1400"}))
    q1 = await env.sandbox("sb-q1", NetworkAttachment("quiet"))
    q2 = await env.sandbox("sb-q2", NetworkAttachment("quiet"))
    server = start_server(q1.netns_path, "q1", 8080)
    try:
        assert " mtu 1400 " in link_line(q1.netns_path, "eth0")
        assert (await probe(q2.netns_path, ip_of(addresses(q1.netns_path)["eth0"]), 8080)).startswith("ERR")
        assert await resolve(q2.netns_path, "q1") == (0, [ip_of(addresses(q1.netns_path)["eth0"])])  # names still
    finally:
        stop_server(server)
        for req in (q1, q2):
            await env.remove(req)
    await env.service.remove("quiet")
    assert env.net.leftovers() == {k: [] for k in env.net.leftovers()}


async def test_port_53_stays_free_for_the_container(env: Env) -> None:
    """The embedded server listens on random ports that a NAT rule in the netns maps 127.0.0.11:53 to, as
    Docker's does: a DNS server in the container can still bind 0.0.0.0:53."""
    await env.service.create(CreateRequest("dnsfree"))
    req = await env.sandbox("sb-dnsfree", NetworkAttachment("dnsfree"))

    def bind53() -> tuple[socket.socket, socket.socket]:
        tcp = socket.socket()
        tcp.bind(("0.0.0.0", 53))
        tcp.listen()
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("0.0.0.0", 53))
        return tcp, udp

    try:
        tcp, udp = await netns.run_in_netns(req.netns_path, bind53)
        try:
            own = ip_of(addresses(req.netns_path)["eth0"])
            assert await resolve(req.netns_path, "dnsfree") == (0, [own])
            assert await resolve(req.netns_path, "dnsfree", tcp=True) == (0, [own])
        finally:
            tcp.close()
            udp.close()
        nat = in_netns(req.netns_path, "iptables", "-w", "-t", "nat", "-S")
        assert "-A OUTPUT -d 127.0.0.11/32 -j NARWHAL-DNS" in nat and nat.count("DNAT") == 2
    finally:
        await env.remove(req)
    await env.service.remove("dnsfree")


async def test_two_instances_never_share_subnets_bridges_or_chains(env: Env, host_guard: HostGuard,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Another narwhald on the host: its auto-picked subnets skip ours (our bridges are up with their
    gateway from create on, so their routes show), and its bridges and isolation chain are its own."""
    pick = conflist.pick_subnet
    # Both instances start from the same slot, so only the host's routes can keep them apart.
    monkeypatch.setattr(conflist, "pick_subnet", lambda _instance, taken: pick("00000000", taken))
    other_net = Net(Path(tempfile.mkdtemp(prefix="nwd-", dir="/tmp")), host_guard)
    other = NetworkService(other_net.cfg, other_net.manager, owners=Owners(), dns_upstream=NO_UPSTREAM)
    await other.start()
    ours: list[str] = []
    try:
        for i in range(3):
            ours.append((await env.service.create(CreateRequest(f"mine{i}"))).ipam[0].subnet)
        theirs = [(await other.create(CreateRequest(f"theirs{i}"))).ipam[0].subnet for i in range(3)]
        assert not set(ours) & set(theirs)
        mine, yours = env.service.get("mine0"), other.get("theirs0")
        assert mine.bridge != yours.bridge and mine.cni_name != yours.cni_name
        assert env.service.isolation.chain != other.isolation.chain
        assert chain_exists(env.service.isolation.chain) and chain_exists(other.isolation.chain)
    finally:
        for n in list(other.all()):
            if not n.predefined:
                await other.remove(n.id)
        for i in range(len(ours)):
            await env.service.remove(f"mine{i}")
        shutil.rmtree(other_net.base, ignore_errors=True)
    assert not chain_exists(other.isolation.chain)


def host(*cmd: str, check: bool = True) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=check).stdout


def iptables_lines(table: str, chain: str) -> list[str]:
    out = subprocess.run(["iptables", "-w", "-t", table, "-S", chain], capture_output=True, text=True).stdout
    return out.splitlines()


async def test_forwarding_and_masquerade_are_rules_per_network(env: Env, host_guard: HostGuard) -> None:
    """Masquerade and FORWARD accepts per network, not per pod (pkg/cni/netrules.py): with FORWARD's policy
    DROP (as dockerd leaves it) pods reach each other, a published port (hairpin too) and, masqueraded, a host
    outside their subnet that has no route back to them; enable_ip_masquerade=false is honoured; isolation
    still comes first; a network's rules go with it."""
    cfg = env.net.cfg
    fwd, masq = f"NW-FWD-{cfg.instance_id}", f"NW-MASQ-{cfg.instance_id}"
    wayout = await env.service.create(CreateRequest("wayout", ipam=(IPAMPool("10.201.21.0/24"),)))
    plain = await env.service.create(CreateRequest("plain", ipam=(IPAMPool("10.201.22.0/24"),), options={
        conflist.MASQUERADE_OPTION: "false"}))
    assert f"-A {masq} -s 10.201.21.0/24 ! -o {wayout.bridge} -m comment --comment {wayout.cni_name} " \
           "-j MASQUERADE" in iptables_lines("nat", masq)
    assert not [line for line in iptables_lines("nat", masq) if plain.bridge in line]
    assert [line for line in iptables_lines("filter", fwd) if f"-i {plain.bridge} " in line]
    forward = [line.split(" -j ")[-1] for line in iptables_lines("filter", "FORWARD") if " -j " in line]
    assert forward.index(env.service.isolation.chain) < forward.index(fwd)  # drops before accepts

    outside = env.net.base / "outside"  # a host beyond the pods' subnets, with no route back to them
    host_if = f"nwo{cfg.instance_id[:8]}"
    await netns.create(outside)
    host_guard.bridges.append(host_if)  # removed at the end whatever happens (ip link del works on a veth)
    in_netns(outside, "ip", "link", "add", "vo-in", "type", "veth", "peer", "name", host_if, "netns",
             str(os.getpid()))
    in_netns(outside, "ip", "addr", "add", "10.201.199.2/24", "dev", "vo-in")
    in_netns(outside, "ip", "link", "set", "vo-in", "up")
    host("ip", "addr", "add", "10.201.199.1/24", "dev", host_if)
    host("ip", "link", "set", host_if, "up")
    host("iptables", "-w", "-P", "FORWARD", "DROP")  # restored by host_guard and below
    published = free_port()
    w1 = env.net.req("sb-w1", networks=(NetworkAttachment("wayout"),),
                     port_mappings=[PortMapping(container_port=8080, host_port=published)])
    await netns.create(w1.netns_path)
    await env.net.manager.setup(w1)
    w2 = await env.sandbox("sb-w2", NetworkAttachment("wayout"))
    p1 = await env.sandbox("sb-p1", NetworkAttachment("plain"))
    d1 = await env.sandbox("sb-d1")  # the default network
    servers = [start_server(outside, "outside", 8080), start_server(w1.netns_path, "w1", 8080),
               start_server(d1.netns_path, "d1", 8080)]
    try:
        assert await probe(w2.netns_path, ip_of(addresses(w1.netns_path)["eth0"]), 8080) == "w1"
        # a published port through the host's address on the bridge: from a neighbour, and hairpin to itself
        assert await probe(w2.netns_path, "10.201.21.1", published, timeout=5) == "w1"
        assert await probe(w1.netns_path, "10.201.21.1", published, timeout=5) == "w1"
        assert await probe(w1.netns_path, "10.201.199.2", 8080, timeout=5) == "outside"
        assert await probe(d1.netns_path, "10.201.199.2", 8080, timeout=5) == "outside"
        assert (await probe(p1.netns_path, "10.201.199.2", 8080)).startswith("ERR")  # not masqueraded: no reply
        assert (await probe(w1.netns_path, ip_of(addresses(d1.netns_path)["eth0"]), 8080)).startswith("ERR")
        # nothing per pod: no masquerade chain and no firewall plugin rule for any of them
        assert tagged_rules(wayout.cni_name) == [] and tagged_rules(defaults.network_name(cfg)) == []
        ips = [ip_of(addresses(ns.netns_path)["eth0"]) for ns in (w1, w2, p1, d1)]
        save = host("iptables-save")
        assert not [line for line in save.splitlines() if line.startswith("-A CNI-FORWARD")
                    and any(f" {ip}/32 " in line for ip in ips)]
    finally:
        host("iptables", "-w", "-P", "FORWARD", host_guard.forward_policy, check=False)
        for proc in servers:
            stop_server(proc)
        for req in (w1, w2, p1, d1):
            await env.remove(req)
        host("ip", "link", "del", host_if, check=False)
        await netns.remove(outside)
    await env.service.remove("wayout")
    await env.service.remove("plain")
    assert not [line for line in iptables_lines("nat", masq) + iptables_lines("filter", fwd)
                if wayout.bridge in line or plain.bridge in line]
    assert [line for line in iptables_lines("filter", fwd) if f"-i {defaults.bridge_name(cfg)} " in line]
    assert env.net.leftovers() == {k: [] for k in env.net.leftovers()}
