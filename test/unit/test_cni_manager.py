"""Default network, config keys, NetworkReady and the attachment cache (no root needed)."""
from __future__ import annotations

import ipaddress
import json
import sys
from pathlib import Path

import pytest

from pkg import errors
from pkg.cni import defaults
from pkg.cni.cache import Attachment, AttachmentCache
from pkg.cni.manager import NetworkManager
from pkg.cni.model import PodNetworkRequest, PortMapping
from pkg.config import Config, build


def cfg_for(tmp_path: Path, **flags: str) -> Config:
    return build({}, {"root": str(tmp_path / "root"), "state": str(tmp_path / "state"),
                      "cni-conf-dir": str(tmp_path / "net.d"), "cni-bin-dir": str(tmp_path / "bin"), **flags})


def fake_plugins(bin_dir: Path, *names: str, versions: tuple[str, ...] = ("0.4.0", "1.0.0")) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        p = bin_dir / name
        p.write_text(f"#!{sys.executable}\nimport json\n"
                     f"print(json.dumps({{'cniVersion': '1.0.0', 'supportedVersions': {list(versions)!r}}}))\n")
        p.chmod(0o755)


def test_config_keys() -> None:
    cfg = build({"pod-subnet": ["10.50.0.0/24", "fd00:50::/64"], "cni-bridge": "br-pods"}, {"cni-timeout": "2.5"})
    assert cfg.pod_subnet == ["10.50.0.0/24", "fd00:50::/64"] and cfg.cni_bridge == "br-pods"
    assert cfg.cni_timeout == 2.5 and cfg.netns_dir == cfg.state / "netns"
    assert build({}, {"pod-subnet": "10.50.0.0/24,fd00:50::/64"}).pod_subnet == cfg.pod_subnet
    for key, bad in (("pod-subnet", "10.50.0.1/24"), ("pod-subnet", "10.1.0.0/24,10.2.0.0/24"),
                     ("cni-bridge", "a-bridge-name-too-long"), ("cni-timeout", "0"), ("cni-timeout", "soon")):
        with pytest.raises(errors.InvalidArgument, match=key):
            build({}, {key: bad})


def test_default_network_is_per_instance(tmp_path: Path) -> None:
    a, b = cfg_for(tmp_path / "a"), cfg_for(tmp_path / "b")
    assert a.instance_id != b.instance_id
    for get in (defaults.network_name, defaults.bridge_name, defaults.admin_chain):
        assert get(a) != get(b)
    assert len(defaults.bridge_name(a)) <= 15 and len(defaults.admin_chain(a)) <= 28
    data = defaults.conflist(a, ["10.123.7.0/24"])
    # masquerade and FORWARD accepts are narwhald's, per network (pkg/cni/netrules.py)
    assert [p["type"] for p in data["plugins"]] == ["bridge", "tuning", "portmap", "bandwidth"]
    assert data["plugins"][0]["ipMasq"] is False
    assert data["plugins"][0]["ipam"]["dataDir"].startswith(str(a.state))
    assert data["plugins"][1] == {"type": "tuning", "capabilities": {"mac": True},
                                  "dataDir": str(a.state / "cni" / "tuning")}
    legacy = defaults.legacy_conflist(a, ["10.123.7.0/24"])  # as versions before wrote it
    assert [p["type"] for p in legacy["plugins"]] == ["bridge", "tuning", "portmap", "firewall", "bandwidth"]
    assert legacy["plugins"][0]["ipMasq"] is True
    assert legacy["plugins"][3] == {"type": "firewall", "backend": "iptables",
                                    "iptablesAdminChainName": defaults.admin_chain(a)}


def test_subnet_avoids_docker_and_existing_routes() -> None:
    docker = ipaddress.IPv4Network("172.17.0.0/16")
    first = defaults.pick_subnet("0000002a", [])
    assert first == ipaddress.IPv4Network("10.123.42.0/24") and not first.overlaps(docker)
    assert defaults.pick_subnet("0000002a", [first]) == ipaddress.IPv4Network("10.123.43.0/24")
    assert defaults.pick_subnet("000000ff", [ipaddress.IPv4Network("10.123.255.0/24")]) == \
        ipaddress.IPv4Network("10.123.0.0/24")


def test_default_written_only_into_an_empty_conf_dir(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path, **{"pod-subnet": "10.77.0.0/24"})
    path = defaults.write_if_missing(cfg)
    assert path is not None and defaults.subnets_of(json.loads(path.read_text())) == ["10.77.0.0/24"]
    assert defaults.write_if_missing(cfg) is None
    path.unlink()
    (cfg.cni_conf_dir / "99-mine.conf").write_text("{broken")  # the admin's, even if broken
    assert defaults.write_if_missing(cfg) is None


def test_a_default_network_an_older_version_wrote_is_upgraded(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path)
    cfg.cni_conf_dir.mkdir(parents=True)
    path = cfg.cni_conf_dir / defaults.FILE_NAME
    path.write_text(json.dumps(defaults.legacy_conflist(cfg, ["10.123.9.0/24"])))
    assert defaults.upgrade_legacy(cfg) == path
    assert json.loads(path.read_text()) == defaults.conflist(cfg, ["10.123.9.0/24"])  # same subnet, new shape
    assert defaults.upgrade_legacy(cfg) is None  # once
    edited = defaults.legacy_conflist(cfg, ["10.123.9.0/24"])
    edited["plugins"][3]["iptablesAdminChainName"] = "MINE"  # the admin's: left alone
    path.write_text(json.dumps(edited))
    assert defaults.upgrade_legacy(cfg) is None and json.loads(path.read_text()) == edited


async def test_network_ready_reasons(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path)
    cfg.cni_conf_dir.mkdir()
    (cfg.cni_conf_dir / "10-x.conf").write_text("{broken")
    mgr = NetworkManager(cfg)
    cond = await mgr.status()
    assert (cond.status, cond.reason) == (False, "InvalidNetworkConfig") and "10-x.conf" in cond.message
    with pytest.raises(errors.FailedPrecondition, match="network not ready: InvalidNetworkConfig"):
        await mgr.network()
    conf = {"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "bridge", "ipam": {"type": "host-local"}},
                                                            {"type": "portmap"}]}
    (cfg.cni_conf_dir / "10-x.conf").write_text(json.dumps(conf))
    cond = await mgr.status()  # a change is seen at the next status, no restart
    assert (cond.status, cond.reason) == (False, "NetworkPluginNotReady") and "'bridge' not found" in cond.message
    fake_plugins(cfg.cni_bin_dir[0], "bridge", "portmap")
    cond = await mgr.status()
    assert (cond.status, cond.reason) == (False, "NetworkPluginNotReady") and "'host-local' not found" in cond.message
    fake_plugins(cfg.cni_bin_dir[0], "host-local")
    assert (await mgr.status()).status
    (cfg.cni_conf_dir / "10-x.conf").unlink()
    assert (await mgr.status()).reason == "NoNetworkConfig"


def test_capability_args_and_cni_args() -> None:
    req = PodNetworkRequest(
        sandbox_id="abc", netns_path=Path("/x"), pod_name="web;x=1", pod_namespace="default", pod_uid="u1",
        port_mappings=[PortMapping(80, 8080, "TCP", "127.0.0.1"), PortMapping(53, 0, "udp"),
                       PortMapping(443, 8443, "tcp", "0.0.0.0")],
        bandwidth_ingress=1_000_000, ips=["10.1.0.9"],
    )
    rc = NetworkManager.runtime_config(req)
    assert rc == {
        "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "127.0.0.1"},
                         {"hostPort": 8443, "containerPort": 443, "protocol": "tcp"}],
        "bandwidth": {"ingressRate": 1_000_000, "ingressBurst": 2**31 - 1},
        "ips": ["10.1.0.9"],
    }
    assert NetworkManager.cni_args(req) == (
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=webx1;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u1"
    )


async def test_bad_requests_are_refused_before_any_plugin_runs(tmp_path: Path) -> None:
    mgr = NetworkManager(cfg_for(tmp_path))
    for req in (
        PodNetworkRequest(sandbox_id="../etc", netns_path=Path("/x")),
        PodNetworkRequest(sandbox_id="a", netns_path=Path("/x"), port_mappings=[PortMapping(80, 80, "icmp")]),
        PodNetworkRequest(sandbox_id="a", netns_path=Path("/x"), port_mappings=[PortMapping(0, 80)]),
        PodNetworkRequest(sandbox_id="a", netns_path=Path("/x"), port_mappings=[PortMapping(80, 80, host_ip="x")]),
    ):
        with pytest.raises(errors.InvalidArgument):
            await mgr.setup(req)


async def test_teardown_without_attachment_is_success(tmp_path: Path) -> None:
    mgr = NetworkManager(cfg_for(tmp_path))
    await mgr.teardown(PodNetworkRequest(sandbox_id="never", netns_path=Path("/nonexistent")))
    with pytest.raises(errors.NotFound):
        await mgr.check(PodNetworkRequest(sandbox_id="never", netns_path=Path("/nonexistent")))


async def test_cache_round_trip_and_torn_files(tmp_path: Path) -> None:
    cache = AttachmentCache(tmp_path / "results")
    att = Attachment("sb", "net", "eth0", "/run/x", "K=V", {"name": "net", "plugins": []}, {"ips": ["1.2.3.4"]})
    await cache.put(att)
    assert await cache.get("sb") == att and await cache.ids() == ["sb"]
    (tmp_path / "results" / "torn.json").write_text('{"sandboxId": ')
    assert await cache.get("torn") is None and await cache.ids() == ["sb", "torn"]
    await cache.delete("sb")
    await cache.delete("sb")
    assert await cache.get("sb") is None


async def test_cache_reads_are_kept_until_a_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``all`` (every Docker inspect asks) reads the files once; any put or delete makes the next read fresh,
    and a read that overlapped a write is not kept (issue 21)."""
    cache = AttachmentCache(tmp_path / "results")
    att = Attachment("sb", "net", "eth0", "/run/x", "", {"name": "net", "plugins": []}, {"ips": ["1.2.3.4"]})
    await cache.put(att)
    reads: list[str] = []
    real_all = cache._all

    def counted(sandbox_id: str) -> list[Attachment]:
        reads.append(sandbox_id)
        return real_all(sandbox_id)

    monkeypatch.setattr(cache, "_all", counted)
    assert await cache.all("sb") == [att] and await cache.all("sb") == [att] and reads == ["sb"]
    extra = Attachment("sb", "net2", "eth1", "/run/x", "", {"name": "net2", "plugins": []}, {"ips": ["5.6.7.8"]})
    await cache.put(extra)
    assert await cache.all("sb") == [att, extra] and reads == ["sb", "sb"]
    await cache.delete("sb", "eth1")
    assert await cache.all("sb") == [att] and len(reads) == 3

    def racing(sandbox_id: str) -> list[Attachment]:  # a write lands while this read is in its thread
        found = real_all(sandbox_id)
        cache._generation += 1
        return found

    cache._known.clear()  # as after a write, so the next read goes to the files
    monkeypatch.setattr(cache, "_all", racing)
    assert await cache.all("sb") == [att]
    monkeypatch.setattr(cache, "_all", counted)
    assert await cache.all("sb") == [att] and len(reads) == 4  # the racing read was not kept
