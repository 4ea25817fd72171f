"""Three managers and a worker on the cluster test bed (test/lib/cluster.py): every manager sees the others
Reachable and one Leader; demote and promote change etcd membership; one manager lost, updates are still
accepted and the worker stays Ready (its etcd client fails over to another manager); two of three lost,
updates are refused with moby's "no leader" error while running tasks keep running; one back, the swarm
accepts updates again."""
from __future__ import annotations

import json
import sys
import time

import pytest
from lib.cluster import Node, cluster, eventually

pytestmark = pytest.mark.cluster

NO_LEADER = ("The swarm does not have a leader. It's possible that too few managers are online. Make sure more "
             "than half of the managers are online.")


# Run inside a node's namespace: etcd's KV Range and MemberList against a manager's client URL, with no TLS,
# TLS without a client certificate, a certificate of another CA, and the node's own certificate.
PROBE = """
import asyncio, json, sys
from pathlib import Path
import grpc
from aetcd import rpc
from pkg.docker.swarm import ca

host, port, certs = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
root = (certs / "swarm-root-ca.crt").read_bytes()
stranger_ca = ca.new_root()
stranger = ca.issue(stranger_ca, "stranger", "manager", "other", ["127.0.0.1", host])

async def attempt(channel):
    async with channel:
        await rpc.KVStub(channel).Range(rpc.RangeRequest(key=b"/narwhal/swarm/cluster"), timeout=5)
        members = await rpc.ClusterStub(channel).MemberList(rpc.MemberListRequest(), timeout=5)
        return [u for m in members.members for u in (*m.peerURLs, *m.clientURLs)]

async def main():
    target = f"{host}:{port}"
    cases = {
        "plain": lambda: grpc.aio.insecure_channel(target),
        "no-cert": lambda: grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(root)),
        "other-ca": lambda: grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(
            root, stranger.key_pem, stranger.cert_pem)),
        "node-cert": lambda: grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(
            root, (certs / "swarm-node.key").read_bytes(), (certs / "swarm-node.crt").read_bytes())),
    }
    out = {}
    for name, make in cases.items():
        try:
            out[name] = await attempt(make())
        except grpc.aio.AioRpcError as exc:
            out[name] = "refused: " + exc.code().name
    print(json.dumps(out))

asyncio.run(main())
"""


def etcd_probe(client: Node, manager: Node) -> dict[str, object]:
    """What ``client``'s namespace gets from ``manager``'s etcd client port with each kind of credentials."""
    member = json.loads((manager.daemon.root / "docker" / "swarm" / "etcd.json").read_text())
    certs = client.daemon.root / "docker" / "swarm" / "certificates"
    out = client.run_in(sys.executable, "-c", PROBE, manager.address, str(member["client_port"]), str(certs)).stdout
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def rows(node: Node) -> dict[str, dict[str, str]]:
    return {r["ID"]: r for r in (json.loads(line) for line in node.out("node", "ls", "--format",
                                                                        "{{json .}}").splitlines())}


def manager_status(node: Node) -> dict[str, str]:
    """Manager status per manager node ID (workers left out)."""
    return {i: r["ManagerStatus"] for i, r in rows(node).items() if r["ManagerStatus"]}


def test_three_managers_failover_and_quorum() -> None:
    with cluster(4, managers=3) as bed:
        ids = {n.index: n.info()["NodeID"] for n in bed.nodes}
        worker = bed.nodes[3]
        for node in bed.nodes[:3]:
            assert node.info()["ControlAvailable"] is True
            assert eventually(lambda n=node: sorted(manager_status(n).values()) == ["Leader", "Reachable",
                                                                                   "Reachable"], 30)
        # etcd speaks mTLS only: the worker's node certificate gets in; no TLS, TLS without a client certificate
        # and a certificate of another CA are refused; every member's peer and client URLs are https
        probe = etcd_probe(worker, bed.nodes[1])
        assert str(probe["plain"]).startswith("refused") and str(probe["no-cert"]).startswith("refused")
        assert str(probe["other-ca"]).startswith("refused")
        urls = probe["node-cert"]
        assert isinstance(urls, list) and len(urls) == 6 and all(u.startswith("https://10.213.") for u in urls), urls
        refused = bed.nodes[2].docker("swarm", "leave", check=False)
        assert refused.returncode != 0
        assert "participating as a manager" in refused.stderr and "--force-new-cluster" in refused.stderr

        # demote and promote node 2: its etcd member goes and comes back
        bed.nodes[0].out("node", "demote", ids[2])
        assert eventually(lambda: bed.nodes[2].info()["ControlAvailable"] is False, 60)
        assert eventually(lambda: ids[2] not in manager_status(bed.nodes[0]), 30)
        bed.nodes[0].out("node", "promote", ids[2])
        assert eventually(lambda: bed.nodes[2].info()["ControlAvailable"] is True, 60)
        assert eventually(lambda: sorted(manager_status(bed.nodes[1]).values()) == ["Leader", "Reachable",
                                                                                    "Reachable"], 60)

        leader = next(n for n in bed.nodes[:3] if manager_status(n)[n.info()["NodeID"]] == "Leader")
        others = [n for n in bed.nodes[:3] if n is not leader]
        others[0].out("service", "create", "--detach", "--name", "keep", "--replicas", "3", "busybox", "sleep", "1d")
        assert eventually(lambda: others[0].out("service", "ls", "--format", "{{.Replicas}}") == "3/3", 90)

        # one manager (the leader) gone, narwhald and its etcd: the two others go on
        lost = time.monotonic()
        leader.kill9()
        leader.stop_etcd()
        assert eventually(lambda: manager_status(others[0]).get(ids[leader.index]) == "Unreachable"
                          and "Leader" in manager_status(others[0]).values(), 60)
        print(f"new leader after {time.monotonic() - lost:.1f}s")
        others[0].out("service", "scale", "--detach", "keep=4")
        assert eventually(lambda: others[1].out("service", "ls", "--format", "{{.Replicas}}") == "4/4", 90)
        # the worker joined through node 0; whichever manager it used may be gone: it stays (or is again) Ready
        assert eventually(lambda: rows(others[0])[ids[3]]["Status"] == "Ready"
                          and rows(others[1])[ids[3]]["Status"] == "Ready", 60)
        assert worker.info()["LocalNodeState"] == "active"

        # two of three gone: refused with moby's error, the tasks on the survivor keep running
        survivor, second = others[1], others[0]
        running = survivor.out("ps", "-q", "--filter", "label=com.docker.swarm.service.name=keep").split()
        assert running
        second.kill9()
        second.stop_etcd()
        assert eventually(lambda: NO_LEADER in survivor.docker("service", "scale", "--detach", "keep=5",
                                                               check=False).stderr, 60)
        assert NO_LEADER in survivor.docker("node", "ls", check=False).stderr
        still = survivor.out("ps", "-q", "--filter", "label=com.docker.swarm.service.name=keep").split()
        assert set(running) <= set(still)

        # one comes back: quorum again, updates accepted
        second.daemon.start(timeout=120)
        assert eventually(lambda: survivor.docker("service", "scale", "--detach", "keep=2", check=False)
                          .returncode == 0, 90)
        assert eventually(lambda: second.out("service", "ls", "--format", "{{.Replicas}}") == "2/2", 90)
        leader.daemon.start(timeout=120)
        assert eventually(lambda: sorted(manager_status(survivor).values()) == ["Leader", "Reachable",
                                                                                "Reachable"], 60)
        survivor.out("service", "rm", "keep")
