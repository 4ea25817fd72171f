"""Teardown sweeps leftover iptables state only when the plugins could not clean up themselves (the
netns or the pod's interface gone, or an ADD cut short); either way nothing is left behind."""
from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from lib.cni_host import HostGuard, free_port, mounted_under, run, tagged_rules
from lib.cni_net import Net, clean

from pkg.cni import gc
from pkg.cni.model import PortMapping


@pytest.fixture(scope="module")
def host_guard() -> Iterator[HostGuard]:
    guard = HostGuard.take()
    yield guard
    guard.restore()


@pytest.fixture
async def net(host_guard: HostGuard) -> AsyncIterator[Net]:
    net = Net(Path(tempfile.mkdtemp(prefix="nwc-", dir="/tmp")), host_guard)
    await net.manager.start()
    net.subnet_prefix()
    try:
        yield net
    finally:
        await net.manager.stop()
        await net.manager.gc(set())
        for path in mounted_under(net.base):
            run("umount", "-l", path, check=False)
        shutil.rmtree(net.base, ignore_errors=True)


@pytest.fixture
def sweeps(monkeypatch: pytest.MonkeyPatch) -> list[set[str]]:
    """The sandbox ids teardown swept iptables for (the real sweep still runs)."""
    seen: list[set[str]] = []
    real = gc.cleanup_iptables

    async def spy(sandbox_ids: set[str], network_name: str, firewall_ips: frozenset[str] = frozenset()) -> None:
        seen.append(set(sandbox_ids))
        await real(sandbox_ids, network_name, firewall_ips)

    monkeypatch.setattr(gc, "cleanup_iptables", spy)
    return seen


async def test_plain_teardown_needs_no_sweep(net: Net, sweeps: list[set[str]]) -> None:
    req, _ = await net.pod("plain", port_mappings=[PortMapping(80, free_port())])
    assert tagged_rules(net.network)
    await net.remove(req)
    assert sweeps == []
    assert net.leftovers() == clean(net)


async def test_teardown_after_the_interface_vanished_sweeps(net: Net, sweeps: list[set[str]]) -> None:
    req, _ = await net.pod("noif", port_mappings=[PortMapping(80, free_port())])
    # The pod's eth0 deleted behind our back: bridge's DEL then cannot learn which IPs it masqueraded.
    proc = await asyncio.create_subprocess_exec("nsenter", f"--net={req.netns_path}", "ip", "link", "del", "eth0")
    assert await proc.wait() == 0
    await net.remove(req)
    assert sweeps == [{"noif"}]
    assert net.leftovers() == clean(net)
