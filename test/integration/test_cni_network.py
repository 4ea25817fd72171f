"""Pod networking against the real CNI plugins in /usr/lib/cni, netns created by the test.

The NetworkManager is driven directly (as RunPodSandbox/StopPodSandbox do):
create a netns, setup → pod IP, teardown, remove the netns; then the host is
inspected for leftovers (IP allocations, netns, veths, CNI iptables state).
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from lib import cni_failpoint, nsexec
from lib.cni_host import (
    HostGuard,
    container_chains,
    firewall_rules,
    free_port,
    mounted_under,
    request_from,
    run,
    start_server,
    stop_server,
    wait_gone,
)
from lib.cni_net import Net, clean

from pkg import errors
from pkg.cni import defaults, netns
from pkg.cni.manager import NetworkManager
from pkg.cni.model import PortMapping


@pytest.fixture(scope="module")
def host_guard() -> Iterator[HostGuard]:
    guard = HostGuard.take()
    yield guard
    guard.restore()


NetFactory = Callable[..., Awaitable[Net]]  # net_factory: Net's keyword options in, a started Net out


@pytest.fixture
async def net_factory(host_guard: HostGuard) -> AsyncIterator[NetFactory]:
    made: list[Net] = []

    async def make(**options: object) -> Net:
        net = Net(Path(tempfile.mkdtemp(prefix="nwc-", dir="/tmp")), host_guard, **options)
        made.append(net)
        await net.manager.start()
        net.subnet_prefix()
        return net

    yield make
    for net in made:
        await net.manager.stop()
        await net.manager.gc(set())
        for path in mounted_under(net.base):
            run("umount", "-l", path, check=False)
        shutil.rmtree(net.base, ignore_errors=True)


@pytest.fixture
async def net(net_factory: NetFactory) -> Net:
    return await net_factory()


async def test_two_pods_talk_to_each_other_the_host_and_hostports(net: Net, host_guard: HostGuard) -> None:
    run("iptables", "-w", "-P", "FORWARD", "DROP")  # as Docker leaves it; restored by host_guard
    p_tcp, p_udp, p_pod2, p_only = free_port(), free_port(), free_port(), free_port()
    req1, ip1 = await net.pod("pod1", port_mappings=[
        PortMapping(container_port=8080, host_port=p_tcp),
        PortMapping(container_port=8080, host_port=p_udp, protocol="UDP"),
    ])
    with pytest.raises(errors.NotFound):  # no netns yet: refused, nothing attached
        await net.manager.setup(net.req("pod2"))
    req2, ip2 = await net.pod("pod2", port_mappings=[PortMapping(container_port=8080, host_port=p_pod2)])
    gateway = (await net.manager.attachment("pod2")).gateway  # type: ignore[union-attr]
    assert ip1 != ip2 and ip1.startswith(net.subnet_prefix()) and ip2.startswith(net.subnet_prefix())
    # hostIP is honoured: a mapping bound to the bridge's host address only
    req3, _ = await net.pod("pod3", port_mappings=[PortMapping(container_port=8080, host_port=p_only,
                                                               host_ip=gateway)])
    servers = [start_server(req1.netns_path, "pod1", 8080), start_server(req2.netns_path, "pod2", 8080),
               start_server(req3.netns_path, "pod3", 8080)]
    host_port = free_port()
    host_server = await asyncio.create_subprocess_exec(
        "python3", "-c",
        f"import socket;s=socket.socket();s.bind(('0.0.0.0',{host_port}));s.listen();print('ready',flush=True);"
        "c,_=s.accept();c.sendall(b'host');c.close()",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert host_server.stdout is not None
        assert (await host_server.stdout.readline()).strip() == b"ready"
        # pod ↔ pod across the bridge, with FORWARD DROP
        assert await asyncio.to_thread(request_from, req1.netns_path, ip2, 8080) == "pod2"
        assert await asyncio.to_thread(request_from, req2.netns_path, ip1, 8080) == "pod1"
        # pod → host, host → pod
        assert await asyncio.to_thread(request_from, req1.netns_path, gateway, host_port) == "host"
        assert await asyncio.to_thread(request_from, None, ip1, 8080) == "pod1"
        # hostPorts from the host: loopback and the host's bridge address; protocol honoured
        assert await asyncio.to_thread(request_from, None, "127.0.0.1", p_tcp) == "pod1"
        assert await asyncio.to_thread(request_from, None, gateway, p_tcp) == "pod1"
        assert await asyncio.to_thread(request_from, None, "127.0.0.1", p_udp, "udp") == "pod1"
        assert (await asyncio.to_thread(request_from, None, "127.0.0.1", p_udp)).startswith("ERR")
        assert await asyncio.to_thread(request_from, None, "127.0.0.1", p_pod2) == "pod2"
        assert await asyncio.to_thread(request_from, None, gateway, p_only) == "pod3"
        assert (await asyncio.to_thread(request_from, None, "127.0.0.1", p_only)).startswith("ERR")
    finally:
        for s in servers:
            stop_server(s)
        if host_server.returncode is None:
            host_server.kill()
        await host_server.wait()
    for req in (req1, req2, req3):
        await net.remove(req)
        await net.manager.teardown(req)  # idempotent
    assert net.leftovers() == clean(net)


async def test_50_concurrent_pods_leak_nothing(net: Net) -> None:
    ids = [f"c{i:02d}" for i in range(50)]
    results = await asyncio.gather(*(net.pod(i, port_mappings=[PortMapping(80, 20000 + n)])
                                     for n, i in enumerate(ids)))
    ips = [ip for _, ip in results]
    assert len(set(ips)) == 50
    assert len(net.leftovers()["veths"]) == 50
    await asyncio.gather(*(net.remove(req) for req, _ in results))
    assert net.leftovers() == clean(net)


async def test_teardown_tolerates_a_missing_netns(net: Net) -> None:
    req, _ = await net.pod("gone", port_mappings=[PortMapping(80, free_port())])
    await netns.remove(req.netns_path)  # e.g. removed by hand, or lost in a reboot of /run
    await net.manager.teardown(req)
    await net.manager.teardown(req)
    assert net.leftovers() == clean(net)


def write_conflist(net: Net, plugins: list[dict[str, object]], name: str = "test") -> None:
    for p in net.cfg.cni_conf_dir.iterdir():
        p.unlink()
    (net.cfg.cni_conf_dir / "05-test.conflist").write_text(
        json.dumps({"cniVersion": "1.0.0", "name": name, "plugins": plugins}))


def bridge_plugin(net: Net) -> dict[str, object]:
    data = json.loads((net.cfg.cni_conf_dir / defaults.FILE_NAME).read_text())
    plugin: dict[str, object] = data["plugins"][0]
    return plugin


async def test_broken_config_is_reported_and_refused(net: Net, tmp_path: Path) -> None:
    for p in net.cfg.cni_conf_dir.iterdir():
        p.unlink()
    (net.cfg.cni_conf_dir / "10-broken.conflist").write_text('{"cniVersion": "1.0.0", "name": ')
    cond = await net.manager.status()
    assert not cond.status and cond.reason == "InvalidNetworkConfig" and "10-broken.conflist" in cond.message
    req = net.req("broken")
    await netns.create(req.netns_path)
    with pytest.raises(errors.FailedPrecondition, match="network not ready: InvalidNetworkConfig"):
        await net.manager.setup(req)
    await netns.remove(req.netns_path)
    # a plugin that is not installed
    write_conflist(net, [{"type": "no-such-plugin"}])
    cond = await net.manager.status()
    assert not cond.status and cond.reason == "NetworkPluginNotReady" and "no-such-plugin" in cond.message
    assert net.leftovers()["ips"] == [] and net.leftovers()["netns"] == []


async def test_plugin_error_rolls_back_and_carries_the_message(net: Net, tmp_path: Path) -> None:
    bridge = bridge_plugin(net)
    bin_dir = tmp_path / "bin"
    cni_failpoint.install(bin_dir)
    net.manager.runner = type(net.manager.runner)([*net.cfg.cni_bin_dir, bin_dir], net.cfg.cni_timeout)
    write_conflist(net, [bridge, {"type": "failpoint", "fail": {"ADD": {
        "code": 7, "msg": "failpoint says no", "details": "on purpose"}}}], name=net.network)
    assert (await net.manager.status()).status
    req = net.req("fails")
    await netns.create(req.netns_path)
    with pytest.raises(errors.FailedPrecondition, match="failpoint says no \\(on purpose\\)"):
        await net.manager.setup(req)
    # the bridge had attached an IP and a veth: the rollback DEL released both
    left = net.leftovers()
    assert left["ips"] == [] and left["veths"] == [] and left["cache"] == [] and left["tagged_rules"] == []
    await netns.remove(req.netns_path)
    # exit without a CNI error on stdout: the plugin's stderr is the message
    write_conflist(net, [bridge, {"type": "failpoint", "exitWith": {"ADD": 3}}], name=net.network)
    await netns.create(req.netns_path)
    with pytest.raises(errors.Internal, match="exit status 3: failpoint: exiting with 3"):
        await net.manager.setup(req)
    await netns.remove(req.netns_path)
    assert net.leftovers() == clean(net)


async def test_hanging_plugin_is_killed_at_its_timeout(net_factory: NetFactory, tmp_path: Path) -> None:
    net: Net = await net_factory(cni_timeout=2)
    bin_dir = tmp_path / "bin"
    cni_failpoint.install(bin_dir)
    net.manager.runner = type(net.manager.runner)([*net.cfg.cni_bin_dir, bin_dir], net.cfg.cni_timeout)
    pid_file = tmp_path / "hang.pid"
    write_conflist(net, [bridge_plugin(net), {"type": "failpoint", "hang": ["ADD"], "pidFile": str(pid_file)}],
                   name=net.network)
    req = net.req("hangs")
    await netns.create(req.netns_path)
    with pytest.raises(errors.DeadlineExceeded, match="failpoint ADD did not finish within 2s"):
        await net.manager.setup(req)
    assert wait_gone(int(pid_file.read_text()))
    await netns.remove(req.netns_path)
    assert net.leftovers() == clean(net)


async def test_gc_releases_what_a_crash_left(net_factory: NetFactory) -> None:
    """Pods attached by an older version's chain (bridge ipMasq and the firewall plugin, per pod), then a crash
    and a start of this version: the file is rewritten in the new shape, and GC and DEL still remove every
    per-pod rule the old chain made, from the chain cached with each attachment."""
    net: Net = await net_factory()
    own = net.cfg.cni_conf_dir / defaults.FILE_NAME
    subnets = defaults.subnets_of(json.loads(own.read_text()))
    own.write_text(json.dumps(defaults.legacy_conflist(net.cfg, subnets)))  # as the older version wrote it
    other: Net = await net_factory()  # another instance side by side
    assert other.bridge != net.bridge and other.subnet_prefix() != net.subnet_prefix()
    keep, keep_ip = await net.pod("keep")
    other_req, other_ip = await other.pod("theirs", port_mappings=[PortMapping(80, free_port())])
    await net.pod("crashed", port_mappings=[PortMapping(80, free_port())])
    await net.pod("midadd", port_mappings=[PortMapping(80, free_port())])
    await net.manager.cache.delete("midadd")  # as if killed before the result was recorded
    # a sandbox the runtime still knows, whose ADD was cut short after its intent was recorded
    interrupted, interrupted_ip = await net.pod("interrupted", port_mappings=[PortMapping(80, free_port())])
    record = await net.manager.cache.get("interrupted")
    assert record is not None
    await net.manager.cache.put(dataclasses.replace(record, result=None))
    await netns.create(net.cfg.netns_dir / "orphan-netns")
    await net.manager.stop()

    restarted = NetworkManager(net.cfg)  # a new daemon: nothing in memory
    await restarted.start()
    assert json.loads(own.read_text()) == defaults.conflist(net.cfg, subnets)  # upgraded at start
    try:
        await restarted.gc({"keep", "interrupted"})
        assert len(firewall_rules(interrupted_ip + "/")) == 2
        await restarted.teardown(interrupted)  # DEL without a result still leaves nothing behind
        assert firewall_rules(interrupted_ip + "/") == []
        await netns.remove(interrupted.netns_path)
    finally:
        await restarted.stop()
    left = net.leftovers()
    assert left["netns"] == ["keep"] and left["cache"] == ["keep.json"] and left["ips"] == [keep_ip]
    assert left["veths"] and len(left["veths"]) == 1
    assert all('id: \\"keep\\"' in r for r in left["tagged_rules"])
    assert all(keep_ip in r for r in left["firewall_rules"])
    assert left["chains"] == container_chains(net.network, {"keep"})  # its masquerade chain only
    # the surviving pod and the other instance's pod still work
    server = start_server(keep.netns_path, "keep", 8080)
    try:
        assert await asyncio.to_thread(request_from, None, keep_ip, 8080) == "keep"
    finally:
        stop_server(server)
    assert other.leftovers()["ips"] == [other_ip] and other.leftovers()["tagged_rules"]
    await net.remove(keep)
    await other.remove(other_req)
    assert net.leftovers() == clean(net) and other.leftovers() == clean(other)


async def test_netns_is_separate_with_lo_up(tmp_path: Path) -> None:
    path = await netns.create(tmp_path / "ns")
    try:
        with pytest.raises(errors.AlreadyExists):
            await netns.create(path)
        host_ns = os.readlink("/proc/self/ns/net")
        inside = await netns.run_in_netns(path, lambda: os.readlink("/proc/thread-self/ns/net"))
        assert inside != host_ns and os.readlink("/proc/self/ns/net") == host_ns
        out = await asyncio.to_thread(run, *nsexec.argv(path, "ip", "-o", "link", "show", "lo"))
        assert "UP" in out and "LOWER_UP" in out
    finally:
        await netns.remove(path)
        await netns.remove(path)
    assert not path.exists() and not mounted_under(tmp_path)
    with pytest.raises(errors.NotFound):
        await netns.run_in_netns(path, lambda: None)


async def test_dual_stack_bandwidth_and_check(net_factory: NetFactory) -> None:
    net: Net = await net_factory(pod_subnet="10.124.77.0/24,fd00:77::/64")
    req = net.req("ds", bandwidth_ingress=10_000_000, bandwidth_egress=20_000_000)
    await netns.create(req.netns_path)
    status = await net.manager.setup(req)
    assert status.ip.startswith("10.124.77.") and [ip.split(":")[:2] for ip in status.additional_ips] == [
        ["fd00", "77"]]
    veth = net.leftovers()["veths"][0].split("@")[0]
    qdiscs = run("tc", "qdisc", "show", "dev", veth)
    assert "tbf" in qdiscs and "rate 10Mbit" in qdiscs  # ingress to the pod is shaped on the host veth
    ifbs = [line for line in run("ip", "-o", "link", "show").splitlines() if "bwp" in line]
    assert len(ifbs) == 1  # egress from the pod: shaped on an ifb the bandwidth plugin made
    await net.manager.check(req)
    run(*nsexec.argv(req.netns_path, "ip", "link", "del", "eth0"))
    with pytest.raises(errors.NarwhalError, match="CHECK failed"):
        await net.manager.check(req)
    await net.remove(req)
    assert [line for line in run("ip", "-o", "link", "show").splitlines() if "bwp" in line] == []
    assert net.leftovers() == clean(net)


async def test_cancelled_setup_rolls_back(net: Net, tmp_path: Path) -> None:
    """A RunPodSandbox whose caller gives up mid-ADD: the plugin is killed and the chain DELeted."""
    bin_dir = tmp_path / "bin"
    cni_failpoint.install(bin_dir)
    net.manager.runner = type(net.manager.runner)([*net.cfg.cni_bin_dir, bin_dir], net.cfg.cni_timeout)
    pid_file = tmp_path / "hang.pid"
    write_conflist(net, [bridge_plugin(net), {"type": "failpoint", "hang": ["ADD"], "pidFile": str(pid_file)}],
                   name=net.network)
    req = net.req("cancelled")
    await netns.create(req.netns_path)
    task = asyncio.create_task(net.manager.setup(req))
    for _ in range(200):
        if await asyncio.to_thread(pid_file.exists):
            break
        await asyncio.sleep(0.05)
    assert net.leftovers()["ips"]  # the bridge had attached the pod when we gave up
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert wait_gone(int(pid_file.read_text()))  # noqa: ASYNC240
    await netns.remove(req.netns_path)
    assert net.leftovers() == clean(net)
