"""Docker networks without root: conflists, subnets, isolation rules, the service's objects and DNS records."""
from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from pkg import errors
from pkg.cni import defaults
from pkg.cni import status as status_mod
from pkg.cni.cache import Attachment, AttachmentCache
from pkg.cni.config import from_dict
from pkg.cni.manager import NetworkManager
from pkg.cni.model import Endpoint, NetworkAttachment, PodNetworkRequest
from pkg.cni.netrules import BridgeNetwork
from pkg.cni.status import without_default_routes
from pkg.config import Config, build
from pkg.docker.networks import conflist, firewall
from pkg.docker.networks.model import CreateRequest, IPAMPool, Network, Owner
from pkg.docker.networks.resolv import embedded_dns_config, rewrite_in_place
from pkg.docker.networks.service import NetworkService
from pkg.docker.networks.views import endpoint_id
from pkg.logsetup import new_request_id
from pkg.runtime.etc_files import DNSConfig


def cfg_for(tmp_path: Path) -> Config:
    return build({}, {"root": str(tmp_path / "root"), "state": str(tmp_path / "state"),
                      "cni-conf-dir": str(tmp_path / "net.d"), "cni-bin-dir": str(tmp_path / "bin")})


# ---------------- conflists and pools ----------------
def test_conflist_of_a_network(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path)
    net = Network(id="ab" * 32, name="mynet", driver="bridge", created="", bridge="nwbabababababab",
                  cni_name=conflist.cni_name(cfg, "ab" * 32),
                  ipam=(IPAMPool("10.200.5.0/24", "10.200.5.1", "10.200.5.128/25"),))
    data = conflist.conflist(cfg, net)
    assert data["name"] == f"narwhal-{cfg.instance_id}-abababababab"
    bridge = data["plugins"][0]
    # masquerade and FORWARD accepts are narwhald's rules per network (pkg/cni/netrules.py), not per pod
    assert bridge["bridge"] == "nwbabababababab" and bridge["ipMasq"] is False and bridge["isGateway"] is True
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.200.5.0/24", "gateway": "10.200.5.1",
                                          "rangeStart": "10.200.5.128", "rangeEnd": "10.200.5.254"}]]
    assert bridge["ipam"]["routes"] == [{"dst": "0.0.0.0/0"}]
    assert bridge["ipam"]["dataDir"] == str(defaults.ipam_dir(cfg))
    assert [p["type"] for p in data["plugins"]] == ["bridge", "tuning", "portmap"]
    assert conflist.rules_of(net) == BridgeNetwork(data["name"], net.bridge, ("10.200.5.0/24",), masquerade=True)
    from_dict(data, Path("x"))  # a valid conflist
    internal = Network(**{**net.__dict__, "internal": True})
    data = conflist.conflist(cfg, internal)
    assert data["plugins"][0]["ipMasq"] is False and data["plugins"][0]["ipam"]["routes"] == []
    assert [p["type"] for p in data["plugins"]] == ["bridge", "tuning"]  # no published ports
    assert conflist.rules_of(internal) == BridgeNetwork(data["name"], net.bridge, ("10.200.5.0/24",), False)
    tuned = Network(**{**net.__dict__, "options": {conflist.MTU_OPTION: "1400", conflist.MASQUERADE_OPTION: "0"}})
    assert conflist.conflist(cfg, tuned)["plugins"][0]["mtu"] == 1400
    assert conflist.rules_of(tuned) == BridgeNetwork(data["name"], net.bridge, ("10.200.5.0/24",), False)
    overlay = Network(**{**net.__dict__, "driver": "overlay"})  # a swarm overlay keeps the per-pod chain
    data = conflist.conflist(cfg, overlay)
    assert data["plugins"][0]["ipMasq"] is True and conflist.rules_of(overlay) is None
    assert [p["type"] for p in data["plugins"]] == ["bridge", "tuning", "portmap", "firewall"]
    conflist.check_options({conflist.MTU_OPTION: "1400", conflist.ICC_OPTION: "false"})
    for bad in ({conflist.MTU_OPTION: "huge"}, {conflist.MTU_OPTION: "10"}, {conflist.ICC_OPTION: "maybe"},
                {conflist.BRIDGE_OPTION: "x" * 20}):
        with pytest.raises(errors.InvalidArgument):
            conflist.check_options(bad)


def test_pools_are_completed_and_checked() -> None:
    assert conflist.complete_pool(IPAMPool("10.200.5.0/24")) == IPAMPool("10.200.5.0/24", "10.200.5.1")
    assert conflist.complete_pool(IPAMPool("10.9.0.0/16", "10.9.255.254")).gateway == "10.9.255.254"
    for bad, why in ((IPAMPool("10.200.5.0/33"), "invalid subnet"), (IPAMPool("10.200.5.7/24"), "should be"),
                     (IPAMPool("10.200.5.0/24", "10.200.6.1"), "gateway"),
                     (IPAMPool("10.200.5.0/24", "", "10.201.0.0/25"), "range"),
                     (IPAMPool("fd00::/127"), "too small"), (IPAMPool("10.0.0.0/31"), "too small")):
        with pytest.raises(errors.InvalidArgument, match=why):
            conflist.complete_pool(bad)


def test_subnets_are_picked_clear_of_routes_and_networks() -> None:
    first = conflist.pick_subnet("00000000", [])
    assert first == ipaddress.IPv4Network("10.124.0.0/24")
    assert conflist.pick_subnet("00000000", [first]) == ipaddress.IPv4Network("10.124.1.0/24")
    assert conflist.pick_subnet("00000000", [ipaddress.IPv4Network("10.124.0.0/23")]).network_address == \
        ipaddress.IPv4Address("10.124.2.0")
    with pytest.raises(errors.ResourceExhausted):
        conflist.pick_subnet("00000000", [conflist.SUBNET_POOL])
    with pytest.raises(errors.InvalidArgument):
        conflist.check_bridge_name("a-name-far-too-long")


def test_isolation_rules() -> None:
    rules = firewall.rules("nw-1", [firewall.BridgeRule("b1"), firewall.BridgeRule("b2"),
                                    firewall.BridgeRule("b3", internal=True)])
    assert ["-i", "b1", "-o", "b2", "-j", "DROP"] in rules and ["-i", "b2", "-o", "b1", "-j", "DROP"] in rules
    assert ["-i", "b1", "-o", "nw-1", "-j", "DROP"] in rules and ["-i", "nw-1", "-o", "b1", "-j", "DROP"] in rules
    assert ["-i", "b3", "!", "-o", "b3", "-j", "DROP"] in rules and ["!", "-i", "b3", "-o", "b3", "-j", "DROP"] in rules
    assert len(rules) == len({tuple(r) for r in rules})
    no_icc = firewall.rules("nw-1", [firewall.BridgeRule("b4", icc=False)])
    assert ["-i", "b4", "-o", "b4", "-j", "DROP"] in no_icc
    assert not any(r[1] == r[3] for r in rules if r[0] == "-i" and r[2] == "-o")  # a bridge talks to itself


# ---------------- several attachments per sandbox ----------------
async def test_cache_keeps_one_record_per_interface(tmp_path: Path) -> None:
    cache = AttachmentCache(tmp_path / "results")
    for ifname in ("eth0", "eth1", "eth10", "eth2"):
        await cache.put(Attachment("sb", "net", ifname, "/ns", "", {"plugins": []}, network=ifname, aliases=("x",)))
    await cache.put(Attachment("other", "net", "eth0", "/ns", "", {"plugins": []}))
    assert await cache.ids() == ["other", "sb"]
    assert await cache.ifnames("sb") == ["eth0", "eth1", "eth2", "eth10"]
    assert [a.network for a in await cache.all("sb")] == ["eth0", "eth1", "eth2", "eth10"]
    assert (await cache.get("sb", "eth2")).aliases == ("x",)  # type: ignore[union-attr]
    assert (tmp_path / "results" / "sb.json").exists() and (tmp_path / "results" / "sb+eth1.json").exists()
    await cache.delete("sb", "eth1")
    assert await cache.ifnames("sb") == ["eth0", "eth2", "eth10"] and await cache.mtime("sb") is not None
    assert await cache.mtime("nothing") is None


def test_further_interfaces_take_no_default_route() -> None:
    net = from_dict({"cniVersion": "1.0.0", "name": "n", "plugins": [
        {"type": "bridge", "ipam": {"type": "host-local", "routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.9.0.0/16"}]}},
        {"type": "portmap"}]}, Path("n"))
    stripped = without_default_routes(net)
    assert stripped.plugins[0]["ipam"]["routes"] == [{"dst": "10.9.0.0/16"}]
    assert net.plugins[0]["ipam"]["routes"] == [{"dst": "0.0.0.0/0"}, {"dst": "10.9.0.0/16"}]  # the original stays


@pytest.mark.parametrize(("networks", "wanted"), [
    ((), [""]),
    ((NetworkAttachment("bridge"),), [""]),
    ((NetworkAttachment("a"), NetworkAttachment("bridge")), ["a", ""]),
    ((NetworkAttachment("none"),), []),
])
def test_requested_networks(tmp_path: Path, networks: tuple[NetworkAttachment, ...], wanted: list[str]) -> None:
    mgr = NetworkManager(cfg_for(tmp_path))
    req = PodNetworkRequest("sb", Path("/ns"), networks=networks)
    assert [w.network for w in mgr._wanted(req)] == wanted  # noqa: SLF001


@pytest.mark.parametrize("networks", [
    (NetworkAttachment("a"), NetworkAttachment("a")),
    (NetworkAttachment("none"), NetworkAttachment("a")),
])
def test_bad_network_requests(tmp_path: Path, networks: tuple[NetworkAttachment, ...]) -> None:
    mgr = NetworkManager(cfg_for(tmp_path))
    with pytest.raises(errors.InvalidArgument):
        mgr._wanted(PodNetworkRequest("sb", Path("/ns"), networks=networks))  # noqa: SLF001


# ---------------- the service ----------------
class FakeRules:
    """The per-network rules (pkg/cni/netrules.py) as the host would hold them."""

    def __init__(self) -> None:
        self.installed: dict[str, BridgeNetwork] = {}

    async def ensure(self, net: BridgeNetwork) -> None:
        self.installed[net.name] = net

    async def remove(self, net: BridgeNetwork) -> None:
        self.installed.pop(net.name, None)


class FakeIsolation:
    def __init__(self) -> None:
        self.synced: list[list[str]] = []

    async def sync(self, bridges: list[firewall.BridgeRule]) -> None:
        self.synced.append([b.bridge for b in bridges])


class FakeDNS:
    def __init__(self) -> None:
        self.running: set[str] = set()

    async def ensure(self, sandbox_id: str, netns_path: Path) -> None:
        self.running.add(sandbox_id)

    async def stop(self, sandbox_id: str) -> None:
        self.running.discard(sandbox_id)

    async def stop_all(self) -> None:
        self.running.clear()


class FakeBridges:
    def __init__(self) -> None:
        self.up: dict[str, str] = {}

    async def exists(self, name: str) -> bool:
        return name in self.up

    async def ensure(self, name: str, gateway: str, prefix_len: int) -> None:
        self.up[name] = f"{gateway}/{prefix_len}"

    async def delete(self, name: str) -> None:
        self.up.pop(name, None)


class Owners:
    def owner(self, sandbox_id: str, hint: Endpoint | None = None) -> Owner | None:
        return Owner(f"{sandbox_id}-container-id", f"c-{sandbox_id}") if not sandbox_id.startswith("cri") else None


def make_service(tmp_path: Path) -> tuple[NetworkService, FakeIsolation, FakeDNS]:
    cfg = cfg_for(tmp_path)
    service = NetworkService(cfg, NetworkManager(cfg), owners=Owners())
    service.manager.rules = FakeRules()  # type: ignore[assignment]
    iso, dns = FakeIsolation(), FakeDNS()
    service.isolation = iso  # type: ignore[assignment]
    service.bridges = FakeBridges()  # type: ignore[assignment]
    service.dns = dns  # type: ignore[assignment]
    return service, iso, dns


def ep(sandbox_id: str, network: Network | None, ip: str, ifname: str = "eth0",
       aliases: tuple[str, ...] = ()) -> Endpoint:
    return Endpoint(sandbox_id, network.name if network else "", network.cni_name if network else "narwhal-x",
                    ifname, ip=ip, prefix_len=24, mac="aa:bb:cc:dd:ee:ff", gateway="", aliases=aliases)


async def test_networks_lifecycle(tmp_path: Path) -> None:
    service, iso, _ = make_service(tmp_path)
    await service.start()
    assert [n.name for n in service.all()] == ["bridge", "host", "none"]
    ids = {n.name: n.id for n in service.all()}
    net = await service.create(CreateRequest("mynet", ipam=(IPAMPool("10.200.5.0/24"),), labels={"k": "v"}))
    assert net.bridge == conflist.bridge_name(net.id) and net.ipam == (IPAMPool("10.200.5.0/24", "10.200.5.1"),)
    assert iso.synced[-1] == [net.bridge]
    rules: FakeRules = service.manager.rules  # type: ignore[assignment]
    assert rules.installed == {net.cni_name: BridgeNetwork(net.cni_name, net.bridge, ("10.200.5.0/24",))}
    auto = await service.create(CreateRequest("auto", internal=True))
    assert not rules.installed[auto.cni_name].masquerade
    assert ipaddress.ip_network(auto.ipam[0].subnet).subnet_of(conflist.SUBNET_POOL)
    assert service.get("mynet") is net and service.get(net.id) is net and service.get(net.id[:8]) is net
    for request, kind, text in (
        (CreateRequest("mynet"), errors.Conflict, "network with name mynet already exists"),
        (CreateRequest("other", ipam=(IPAMPool("10.200.0.0/16"),)), errors.PermissionDenied, "overlaps"),
        (CreateRequest("bridge"), errors.PermissionDenied, "pre-defined"),
        (CreateRequest("ov", driver="overlay"), errors.InvalidArgument, "not supported"),
        (CreateRequest("h", driver="host"), errors.PermissionDenied, "only one instance"),
        (CreateRequest(""), errors.InvalidArgument, "empty"),
        (CreateRequest("b2", options={conflist.BRIDGE_OPTION: net.bridge}), errors.Conflict, "in use"),
    ):
        with pytest.raises(kind, match=text):
            await service.create(request)
    with pytest.raises(errors.NotFound, match="network nosuch not found"):
        service.get("nosuch")

    # A restart keeps everything, with the same IDs.
    again, _, _ = make_service(tmp_path)
    await again.start()
    assert {n.name: n.id for n in again.all()} == {**ids, "mynet": net.id, "auto": auto.id}
    assert again.get("mynet") == net

    # In use: not removable, not pruned.
    await service.endpoints_changed("sb1", Path("/ns"), [ep("sb1", net, "10.200.5.2")])
    with pytest.raises(errors.PermissionDenied, match="has active endpoints"):
        await service.remove("mynet")
    with pytest.raises(errors.PermissionDenied, match="pre-defined"):
        await service.remove("bridge")
    assert await service.prune() == ["auto"]
    assert auto.cni_name not in rules.installed and net.cni_name in rules.installed
    await service.endpoints_changed("sb1", None, [])
    await service.remove(net.id)
    assert [n.name for n in service.all()] == ["bridge", "host", "none"] and iso.synced[-1] == []
    assert not list((tmp_path / "root" / "docker" / "networks").glob(f"{net.id}*"))


async def test_endpoints_and_dns_records(tmp_path: Path) -> None:
    service, _, dns = make_service(tmp_path)
    await service.start()
    net = await service.create(CreateRequest("mynet"))
    other = await service.create(CreateRequest("other"))
    internal = await service.create(CreateRequest("inner", internal=True))
    bridge = service.get("bridge")
    await service.endpoints_changed("a", Path("/ns/a"), [ep("a", net, "10.1.0.2", aliases=("web",))])
    await service.endpoints_changed("b", Path("/ns/b"), [ep("b", None, "10.123.0.5"),
                                                       ep("b", net, "10.1.0.3", "eth1")])
    await service.endpoints_changed("c", Path("/ns/c"), [ep("c", other, "10.2.0.2")])
    await service.endpoints_changed("d", Path("/ns/d"), [ep("d", None, "10.123.0.6")])
    await service.endpoints_changed("i", Path("/ns/i"), [ep("i", internal, "10.3.0.2")])
    await service.endpoints_changed("cri1", Path("/ns/x"), [ep("cri1", None, "10.123.0.9")])
    assert dns.running == {"a", "b", "c", "i"}  # only sandboxes on user-defined networks get a server

    records = service.dns_records
    assert records.lookup("b", "web") == ["10.1.0.2"] and records.lookup("b", "C-A.") == ["10.1.0.2"]
    assert records.lookup("b", "a-container-") == ["10.1.0.2"]  # the short (12 character) container ID
    assert records.lookup("b", "web.mynet") == ["10.1.0.2"]
    assert records.lookup("a", "c-b") == ["10.1.0.3"]  # b's address on the network they share
    assert records.lookup("c", "web") is None  # another network: not visible, forwarded
    assert records.lookup("d", "c-d") is None  # the default bridge has no names
    assert records.reverse("b", "10.1.0.2") == "c-a.mynet" and records.reverse("b", "10.2.0.2") is None
    assert records.forwards("a") and not records.forwards("i") and not records.forwards("d")

    views = service.endpoints(net)
    assert [(v.owner_name, v.ipv4, v.endpoint_id) for v in views] == [
        ("c-a", "10.1.0.2/24", endpoint_id("a", net.id)), ("c-b", "10.1.0.3/24", endpoint_id("b", net.id))]
    assert [v.owner_name for v in service.endpoints(bridge)] == ["c-b", "c-d"]  # CRI pods are left out
    assert service.dangling(internal) is False and service.dangling(bridge) is False
    await service.endpoints_changed("b", Path("/ns/b"), [ep("b", None, "10.123.0.5")])
    assert "b" not in dns.running and records.lookup("a", "c-b") is None


def test_resolv_conf_for_user_networks(tmp_path: Path) -> None:
    host = tmp_path / "host-resolv.conf"
    host.write_text("nameserver 10.0.0.53\nsearch corp.example\noptions ndots:5 timeout:2\n")
    assert embedded_dns_config(host_file=host) == DNSConfig(("127.0.0.11",), ("corp.example",),
                                                            ("ndots:0", "timeout:2"))
    asked = DNSConfig(("1.1.1.1",), ("a.example",), ("ndots:2",))
    assert embedded_dns_config(asked, host) == DNSConfig(("127.0.0.11",), ("a.example",), ("ndots:2",))
    sandbox = tmp_path / "resolv.conf"
    sandbox.write_text("nameserver 10.0.0.53\n" + "# padding\n" * 20)
    inode = sandbox.stat().st_ino
    assert rewrite_in_place(sandbox, host) is True
    assert sandbox.read_text() == "search corp.example\nnameserver 127.0.0.11\noptions ndots:0 timeout:2\n"
    assert sandbox.stat().st_ino == inode  # the same file: bind mounts of it see the change
    assert rewrite_in_place(sandbox, host) is False and rewrite_in_place(tmp_path / "none", host) is False


async def test_a_network_being_joined_is_not_removed(tmp_path: Path) -> None:
    """An ADD in flight writes its attachment record before any plugin runs: removal and prune see it."""
    service, _, _ = make_service(tmp_path)
    await service.start()
    net = await service.create(CreateRequest("joining"))
    record = Attachment("sb", net.cni_name, "eth0", "/ns", "", {"plugins": []}, network="joining")
    await service.manager.cache.put(record)
    with pytest.raises(errors.PermissionDenied, match="has active endpoints"):
        await service.remove("joining")
    assert await service.prune() == []
    await service.manager.cache.delete("sb")
    assert await service.prune() == ["joining"]


async def test_bridges_follow_networks_and_failed_creates_roll_back(tmp_path: Path) -> None:
    service, iso, _ = make_service(tmp_path)
    bridges: FakeBridges = service.bridges  # type: ignore[assignment]
    await service.start()
    net = await service.create(CreateRequest("br", ipam=(IPAMPool("10.200.5.0/24"),)))
    assert bridges.up == {net.bridge: "10.200.5.1/24"}  # made at create, as Docker does
    bridges.up.clear()  # a host reboot: the next start makes it again
    again, _, _ = make_service(tmp_path)
    again.bridges = bridges  # type: ignore[assignment]
    await again.start()
    assert bridges.up == {net.bridge: "10.200.5.1/24"}
    assert list(again.manager.rules.installed) == [net.cni_name]  # type: ignore[attr-defined]
    bridges.up["taken0"] = "10.9.9.1/24"
    with pytest.raises(errors.Conflict, match="already in use on the host"):
        await service.create(CreateRequest("clash", options={conflist.BRIDGE_OPTION: "taken0"}))

    async def broken_sync(_: list[firewall.BridgeRule]) -> None:
        raise errors.Internal("iptables: no")

    iso.sync = broken_sync  # type: ignore[method-assign]
    with pytest.raises(errors.Internal):
        await service.create(CreateRequest("doomed"))
    assert [n.name for n in service.all()] == ["bridge", "host", "none", "br"]
    assert set(bridges.up) == {net.bridge, "taken0"}
    assert list(service.manager.rules.installed) == [net.cni_name]  # type: ignore[attr-defined]
    assert len(list((tmp_path / "root" / "docker" / "networks").glob("*.json"))) == 4


async def test_attachment_checks(tmp_path: Path) -> None:
    service, _, _ = make_service(tmp_path)
    await service.start()
    await service.create(CreateRequest("checked", ipam=(IPAMPool("10.200.5.0/24"),)))
    assert service.check_attachment(NetworkAttachment("checked", ("web",), "10.200.5.9")) == NetworkAttachment(
        "checked", ("web",), "10.200.5.9")
    for att, text in ((NetworkAttachment("bridge", ("web",)), "user defined networks"),
                      (NetworkAttachment("checked", ("bad name",)), "invalid network alias"),
                      (NetworkAttachment("checked", (), "10.200.6.9"), "no configured subnet"),
                      (NetworkAttachment("checked", (), "nonsense"), "invalid IPv4"),
                      (NetworkAttachment("bridge", (), "10.123.0.9"), "user defined networks only")):
        with pytest.raises(errors.InvalidArgument, match=text):
            service.check_attachment(att)
    with pytest.raises(errors.NotFound):
        service.check_attachment(NetworkAttachment("nosuch"))


def test_requested_addresses_are_checked_against_the_subnets() -> None:
    from pkg.cni.request import check_address

    check_address("10.200.5.9", ["10.200.5.0/24"], "n")
    check_address("10.200.5.9", [], "n")  # a foreign IPAM: its plugin judges
    with pytest.raises(errors.InvalidArgument, match="no configured subnet or ip-range contain the IP address"):
        check_address("10.200.6.9", ["10.200.5.0/24", "fd00::/64"], "n")


def test_hosts_entries_follow_connect_and_disconnect(tmp_path: Path) -> None:
    from pkg.docker.networks.resolv import hosts_add, hosts_remove

    (tmp_path / "hostname").write_text("box\n")
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1\tlocalhost\n10.123.0.5\tbox\n")
    inode = hosts.stat().st_ino
    hosts_add(tmp_path, "10.200.5.7")
    hosts_add(tmp_path, "10.200.5.7")
    assert hosts.read_text() == "127.0.0.1\tlocalhost\n10.123.0.5\tbox\n10.200.5.7\tbox\n"
    hosts_remove(tmp_path, "10.200.5.7")
    assert hosts.read_text() == "127.0.0.1\tlocalhost\n10.123.0.5\tbox\n" and hosts.stat().st_ino == inode
    hosts_add(tmp_path / "missing", "10.0.0.1")  # no sandbox files: nothing to do


async def test_events_only_for_docker_containers(tmp_path: Path) -> None:
    service, _, _ = make_service(tmp_path)
    seen: list[tuple[str, str, str]] = []
    service.event_hooks.append(lambda e: seen.append((e.action, e.network_name, e.container)))
    await service.start()
    net = await service.create(CreateRequest("evnet"))
    await service.endpoints_changed("cri1", Path("/ns"), [ep("cri1", None, "10.123.0.9")])  # a kubelet pod
    await service.endpoints_changed("cri1", None, [])
    await service.endpoints_changed("a", Path("/ns"), [ep("a", None, "10.123.0.2"), ep("a", net, "10.1.0.2", "eth1")])
    await service.endpoints_changed("a", Path("/ns"), [ep("a", None, "10.123.0.2")])
    await service.remove("evnet")
    assert seen == [("create", "evnet", ""), ("connect", "bridge", "a-container-id"),
                    ("connect", "evnet", "a-container-id"), ("disconnect", "evnet", "a-container-id"),
                    ("destroy", "evnet", "")]


def _completed(ip: str) -> Attachment:
    result = {"cniVersion": "1.0.0",
              "interfaces": [{"name": "eth0", "mac": "02:42:0a:00:00:05", "sandbox": "/ns"}],
              "ips": [{"address": f"{ip}/24", "gateway": "10.99.0.1", "interface": 0}]}
    return Attachment("sb", "net", "eth0", "/ns", "K8S_POD_NAME=x", {"cniVersion": "1.0.0", "plugins": []},
                      result=result)


def test_an_attachments_endpoint_is_parsed_once() -> None:
    """`docker inspect` (before every `docker exec`) asks for the same kept attachments' endpoints: parsed once
    per attachment (frozen; a change is a new Attachment, parsed again)."""
    first = _completed("10.99.0.5")
    endpoint = status_mod.endpoint(first)
    assert endpoint.ip == "10.99.0.5" and endpoint.prefix_len == 24
    assert status_mod.endpoint(first) is endpoint
    changed = _completed("10.99.0.6")
    assert status_mod.endpoint(changed).ip == "10.99.0.6" and status_mod.endpoint(first) is endpoint


def test_request_ids_are_unique_16_hex_digits() -> None:
    ids = {new_request_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(len(i) == 16 and int(i, 16) >= 0 for i in ids)
