"""kill -9 of the process driving CNI during 10 concurrent setups, then a restart's GC.

Every pod whose setup returned before the kill must keep working networking;
everything else (half-done ADDs, netns without an attachment, IPs, chains)
must be released by the GC of the next start.
"""
from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from lib.cni_host import HostGuard, mounted_under, request_from, run, start_server, stop_server
from lib.cni_net import Net, clean

from pkg.cni.manager import NetworkManager

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def host_guard() -> Iterator[HostGuard]:
    guard = HostGuard.take()
    yield guard
    guard.restore()

WORKER = r"""
import asyncio, json, sys
from pathlib import Path
from pkg.config import build
from pkg.cni import netns
from pkg.cni.manager import NetworkManager
from pkg.cni.model import PodNetworkRequest, PortMapping

async def main():
    cfg = build({}, json.loads(sys.argv[1]))
    mgr = NetworkManager(cfg)
    await mgr.start()
    async def pod(i):
        req = PodNetworkRequest(sandbox_id=f"k{i}", netns_path=cfg.netns_dir / f"k{i}",
                                port_mappings=[PortMapping(80, 21000 + i)])
        await netns.create(req.netns_path)
        status = await mgr.setup(req)
        print("done", req.sandbox_id, status.ip, flush=True)
    print("started", flush=True)
    await asyncio.gather(*(pod(i) for i in range(10)))
    print("all", flush=True)
    await asyncio.sleep(300)

asyncio.run(main())
"""


async def test_kill_9_during_concurrent_setups_leaks_nothing(host_guard: HostGuard, tmp_path: Path) -> None:
    net = Net(tmp_path, host_guard)
    flags = {"root": str(net.cfg.root), "state": str(net.cfg.state), "cni-conf-dir": str(net.cfg.cni_conf_dir)}
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-c", WORKER, json.dumps(flags), cwd=str(REPO), stdout=asyncio.subprocess.PIPE,
    )
    assert worker.stdout is not None
    done: dict[str, str] = {}
    try:
        assert (await asyncio.wait_for(worker.stdout.readline(), 60)).strip() == b"started"
        while len(done) < 3:  # kill once a few are attached and the rest are in flight
            line = (await asyncio.wait_for(worker.stdout.readline(), 60)).decode().split()
            assert line and line[0] == "done", line
            done[line[1]] = line[2]
    finally:
        worker.send_signal(signal.SIGKILL)
        await worker.wait()
    assert len(done) < 10

    restarted = NetworkManager(net.cfg)
    await restarted.start()
    try:
        await restarted.gc(set(done))
        net.manager = restarted
        left = net.leftovers()
        assert left["netns"] == sorted(done) and sorted(left["ips"]) == sorted(done.values())
        assert left["cache"] == sorted(f"{sid}.json" for sid in done) and len(left["veths"]) == len(done)
        assert {r.split('id: \\"')[1].split('\\"')[0] for r in left["tagged_rules"]} == set(done)
        for sid, ip in done.items():
            server = start_server(net.cfg.netns_dir / sid, sid, 8080)
            try:
                assert await asyncio.to_thread(request_from, None, ip, 8080) == sid
            finally:
                stop_server(server)
        await restarted.gc(set())  # the runtime removed them all
        assert net.leftovers() == clean(net)
    finally:
        await restarted.stop()
        await restarted.gc(set())
        for path in mounted_under(tmp_path):
            run("umount", "-l", path, check=False)
