"""No-op plugins left out of Narwhal's own chains (pkg/cni/noop.py): which, and that DEL/CHECK follow ADD.

The plugins here are fakes that log each call (type and CNI_COMMAND) and pass prevResult through; the
netns checks are stubbed (no root needed).  The real plugins run in test_cni_network.py and the Docker
network suites.
"""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest

from pkg import errors
from pkg.cni import defaults, netns, netrules, noop
from pkg.cni.cache import Attachment
from pkg.cni.config import from_dict
from pkg.cni.manager import NetworkManager
from pkg.cni.model import PodNetworkRequest, PortMapping
from pkg.config import Config, build

PLUGINS = ("bridge", "host-local", "tuning", "portmap", "firewall", "bandwidth")
RESULT = {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": "/x"}],
          "ips": [{"address": "10.123.7.5/24", "gateway": "10.123.7.1", "interface": 0}]}


def logging_plugins(bin_dir: Path, log: Path) -> None:
    """Fake plugins: VERSION answers, every other call is logged as "<type> <command>"; ADD prints
    prevResult (or a first result)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in PLUGINS:
        p = bin_dir / name
        p.write_text(
            f"#!{sys.executable}\nimport json, os, sys\n"
            "conf = json.load(sys.stdin)\ncmd = os.environ.get('CNI_COMMAND')\n"
            "if cmd == 'VERSION':\n"
            "    print(json.dumps({'cniVersion': '1.0.0', 'supportedVersions': ['0.4.0', '1.0.0']}))\n"
            "    sys.exit(0)\n"
            f"with open({str(log)!r}, 'a') as f:\n"
            f"    f.write({name!r} + ' ' + cmd + ' ' + json.dumps(sorted(conf.get('runtimeConfig') or {{}})) + '\\n')\n"
            f"if cmd == 'ADD':\n    print(json.dumps(conf.get('prevResult') or {RESULT!r}))\n")
        p.chmod(0o755)


def cfg_for(tmp_path: Path) -> Config:
    return build({}, {"root": str(tmp_path / "root"), "state": str(tmp_path / "state"),
                      "cni-conf-dir": str(tmp_path / "net.d"), "cni-bin-dir": str(tmp_path / "bin"),
                      "pod-subnet": "10.123.7.0/24"})


class FakeRules:
    """pkg/cni/netrules.py's NetworkRules without iptables: what is installed."""

    def __init__(self) -> None:
        self.installed: list[netrules.BridgeNetwork] = []

    async def ensure(self, net: netrules.BridgeNetwork) -> None:
        if net not in self.installed:
            self.installed.append(net)

    async def remove(self, net: netrules.BridgeNetwork) -> None:
        self.installed.remove(net)


def manager(cfg: Config) -> NetworkManager:
    mgr = NetworkManager(cfg)
    mgr.rules = FakeRules()  # type: ignore[assignment]
    return mgr


@pytest.fixture
def calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(netns, "exists", lambda path: True)

    async def has_link(path: Path, ifname: str) -> bool:
        return True

    monkeypatch.setattr(netns, "has_link", has_link)
    log = tmp_path / "calls.log"
    logging_plugins(tmp_path / "bin", log)
    return log


def taken(log: Path) -> list[str]:
    """The calls logged since the last look, as "type CMD"."""
    lines = log.read_text().splitlines() if log.exists() else []
    log.unlink(missing_ok=True)
    return [" ".join(line.split()[:2]) for line in lines]


def test_which_plugins_are_noops() -> None:
    portmap = {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True}
    bandwidth = {"type": "bandwidth", "capabilities": {"bandwidth": True}}
    tuning = {"type": "tuning", "capabilities": {"mac": True}, "dataDir": "/x"}
    for plugin in (portmap, bandwidth, tuning):
        assert noop.is_noop(plugin, {}) and noop.is_noop(plugin, {"ips": ["10.0.0.2"]})
    assert not noop.is_noop(portmap, {"portMappings": [{"hostPort": 80, "containerPort": 80, "protocol": "tcp"}]})
    assert noop.is_noop(portmap, {"portMappings": []})
    assert not noop.is_noop(bandwidth, {"bandwidth": {"ingressRate": 1000, "ingressBurst": 10}})
    assert not noop.is_noop(tuning, {"mac": "02:42:ac:11:00:02"})
    # a capability the plugin does not declare is never passed to it: still a no-op
    assert noop.is_noop({"type": "tuning"}, {"mac": "02:42:ac:11:00:02"})
    # what the plugin's own config asks for is done whatever the request says
    assert not noop.is_noop({**tuning, "sysctl": {"net.core.somaxconn": "500"}}, {})
    assert not noop.is_noop({**bandwidth, "ingressRate": 1000}, {})
    for kind in ("bridge", "firewall", "loopback", "sbr"):
        assert not noop.is_noop({"type": kind}, {})


def test_only_lists_narwhal_built_are_pruned(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path)
    data = defaults.conflist(cfg, ["10.123.7.0/24"])
    own = cfg.cni_conf_dir / defaults.FILE_NAME
    assert defaults.is_generated(cfg, own, data)
    assert not defaults.is_generated(cfg, cfg.cni_conf_dir / "20-other.conflist", data)
    edited = json.loads(json.dumps(data))
    edited["plugins"][1]["sysctl"] = {"net.ipv4.conf.IFNAME.arp_notify": "1"}  # the admin's edit: theirs now
    assert not defaults.is_generated(cfg, own, edited)
    legacy = defaults.legacy_conflist(cfg, ["10.123.7.0/24"])  # what older versions wrote is Narwhal's too
    assert defaults.is_generated(cfg, own, legacy)
    net = from_dict(legacy, own)
    assert noop.prune(net, {}) == (net, ())  # not marked generated: run as libcni runs it
    pruned, skipped = noop.prune(dataclasses.replace(net, generated=True), {})
    assert skipped == ("tuning", "portmap", "bandwidth")
    assert [p["type"] for p in pruned.plugins] == [p["type"] for p in pruned.raw["plugins"]] == ["bridge", "firewall"]


async def test_del_and_check_run_what_add_ran(tmp_path: Path, calls: Path) -> None:
    cfg = cfg_for(tmp_path)
    mgr = manager(cfg)
    await mgr.start()
    try:
        assert (await mgr.network()).generated
        bridge = defaults.bridge_name(cfg)
        assert mgr.rules.installed == [  # type: ignore[attr-defined]  # masquerade, FORWARD: once per network
            netrules.BridgeNetwork(defaults.network_name(cfg), bridge, ("10.123.7.0/24",))]
        plain = PodNetworkRequest(sandbox_id="plain", netns_path=tmp_path / "ns-plain")
        status = await mgr.setup(plain)
        assert status.ip == "10.123.7.5"
        assert taken(calls) == ["bridge ADD"]
        att = await mgr.cache.get("plain")
        assert att is not None and att.skipped == ("tuning", "portmap", "bandwidth")
        assert [p["type"] for p in att.config["plugins"]] == ["bridge"]
        await mgr.check(plain)
        assert taken(calls) == ["bridge CHECK"]

        ported = PodNetworkRequest(sandbox_id="ported", netns_path=tmp_path / "ns-ported", mac="02:42:ac:11:00:09",
                                   port_mappings=[PortMapping(80, 8080)])
        await mgr.setup(ported)
        assert taken(calls) == ["bridge ADD", "tuning ADD", "portmap ADD"]

        restarted = manager(cfg)  # a DEL after a restart (or kill -9) reads what ADD ran from the cache
        await restarted.teardown(ported)
        assert taken(calls) == ["portmap DEL", "tuning DEL", "bridge DEL"]
        await restarted.teardown(plain)
        assert taken(calls) == ["bridge DEL"]
    finally:
        await mgr.stop()


async def test_an_attachment_cached_by_the_old_chain_is_deleted_whole(tmp_path: Path, calls: Path) -> None:
    cfg = cfg_for(tmp_path)
    whole = defaults.legacy_conflist(cfg, ["10.123.7.0/24"])
    old = Attachment("old", whole["name"], "eth0", str(tmp_path / "ns-old"), "", whole, {}, RESULT)
    data = old.to_json()
    del data["skipped"]  # as the version before it wrote the record
    (cfg.cni_state_dir / "results").mkdir(parents=True)
    (cfg.cni_state_dir / "results" / "old.json").write_text(json.dumps(data))
    mgr = manager(cfg)
    await mgr.teardown(PodNetworkRequest(sandbox_id="old", netns_path=tmp_path / "ns-old"))
    assert taken(calls) == ["bandwidth DEL", "firewall DEL", "portmap DEL", "tuning DEL", "bridge DEL"]
    assert await mgr.cache.ids() == []


async def test_a_conflist_the_admin_provides_runs_whole(tmp_path: Path, calls: Path) -> None:
    cfg = cfg_for(tmp_path)
    mine = defaults.legacy_conflist(cfg, ["10.123.7.0/24"])
    mine["name"] = "admins"
    cfg.cni_conf_dir.mkdir(parents=True)
    (cfg.cni_conf_dir / "05-admins.conflist").write_text(json.dumps(mine))
    mgr = manager(cfg)
    await mgr.start()
    try:
        req = PodNetworkRequest(sandbox_id="p", netns_path=tmp_path / "ns-p")
        await mgr.setup(req)
        assert taken(calls) == ["bridge ADD", "tuning ADD", "portmap ADD", "firewall ADD", "bandwidth ADD"]
        await mgr.teardown(req)
        assert taken(calls) == ["bandwidth DEL", "firewall DEL", "portmap DEL", "tuning DEL", "bridge DEL"]
        assert mgr.rules.installed == []  # type: ignore[attr-defined]  # not ours: the plugins do it per pod
    finally:
        await mgr.stop()


def test_the_rules_of_a_network() -> None:
    """Docker's shape: FORWARD accepts for the bridge, one MASQUERADE per subnet (in the instance's chains)."""
    net = netrules.BridgeNetwork("narwhal-i", "nw-i", ("10.123.7.0/24", "fd00:7::/64"))
    tag = ["-m", "comment", "--comment", "narwhal-i"]
    established = ["-o", "nw-i", "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", *tag, "-j", "ACCEPT"]
    assert netrules.rules(net, "i") == [
        ("iptables", "filter", "NW-FWD-i", established),
        ("iptables", "filter", "NW-FWD-i", ["-i", "nw-i", *tag, "-j", "ACCEPT"]),
        ("ip6tables", "filter", "NW-FWD-i", established),
        ("ip6tables", "filter", "NW-FWD-i", ["-i", "nw-i", *tag, "-j", "ACCEPT"]),
        ("iptables", "nat", "NW-MASQ-i", ["-s", "10.123.7.0/24", "!", "-o", "nw-i", *tag, "-j", "MASQUERADE"]),
        ("ip6tables", "nat", "NW-MASQ-i", ["-s", "fd00:7::/64", "!", "-o", "nw-i", *tag, "-j", "MASQUERADE"]),
    ]
    internal = netrules.BridgeNetwork("narwhal-i", "nw-i", ("10.123.7.0/24",), masquerade=False)
    assert [table for _, table, _, _ in netrules.rules(internal, "i")] == ["filter", "filter"]


def test_which_conflists_ask_for_rules(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path)
    assert netrules.of_conflist(defaults.conflist(cfg, ["10.123.7.0/24"])) == netrules.BridgeNetwork(
        defaults.network_name(cfg), defaults.bridge_name(cfg), ("10.123.7.0/24",))
    assert netrules.of_conflist(defaults.legacy_conflist(cfg, ["10.123.7.0/24"])) is None  # per pod, in plugins
    assert netrules.of_conflist({"name": "x", "plugins": [{"type": "ptp"}]}) is None


async def test_rules_that_failed_are_tried_again(tmp_path: Path, calls: Path) -> None:
    """NetworkReady is false while the default network's rules cannot be installed, and the next status tries
    again (no file has to change)."""
    cfg = cfg_for(tmp_path)
    mgr = manager(cfg)
    rules: FakeRules = mgr.rules  # type: ignore[assignment]
    real_ensure = rules.ensure

    async def busy(net: netrules.BridgeNetwork) -> None:
        raise errors.Internal("iptables: Another app is currently holding the xtables lock")

    rules.ensure = busy  # type: ignore[method-assign]
    await mgr.start()
    try:
        cond = await mgr.status()
        assert (cond.status, cond.reason) == (False, "NetworkPluginNotReady") and "xtables" in cond.message
        rules.ensure = real_ensure  # type: ignore[method-assign]
        assert (await mgr.status()).status and len(rules.installed) == 1
    finally:
        await mgr.stop()
