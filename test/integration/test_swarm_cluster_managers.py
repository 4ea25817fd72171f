"""Three managers on the cluster test bed (test/lib/cluster.py): every manager sees the others Reachable and
one Leader; demote and promote change etcd membership; one manager lost, updates are still accepted; two of
three lost, updates are refused with moby's "no leader" error while running tasks keep running; one back,
the swarm accepts updates again."""
from __future__ import annotations

import json
import time

import pytest
from lib.cluster import Node, cluster, eventually

pytestmark = pytest.mark.cluster

NO_LEADER = ("The swarm does not have a leader. It's possible that too few managers are online. Make sure more "
             "than half of the managers are online.")


def manager_status(node: Node) -> dict[str, str]:
    rows = [json.loads(line) for line in node.out("node", "ls", "--format", "{{json .}}").splitlines()]
    return {r["ID"]: r["ManagerStatus"] for r in rows}


def test_three_managers_failover_and_quorum() -> None:
    with cluster(3, managers=3) as bed:
        ids = {n.index: n.info()["NodeID"] for n in bed.nodes}
        for node in bed.nodes:
            assert node.info()["ControlAvailable"] is True
            assert eventually(lambda n=node: sorted(manager_status(n).values()) == ["Leader", "Reachable",
                                                                                   "Reachable"], 30)
        refused = bed.nodes[2].docker("swarm", "leave", check=False)
        assert refused.returncode != 0
        assert "participating as a manager" in refused.stderr and "--force-new-cluster" in refused.stderr

        # demote and promote node 2: its etcd member goes and comes back
        bed.nodes[0].out("node", "demote", ids[2])
        assert eventually(lambda: bed.nodes[2].info()["ControlAvailable"] is False, 60)
        assert eventually(lambda: manager_status(bed.nodes[0])[ids[2]] == "", 30)
        bed.nodes[0].out("node", "promote", ids[2])
        assert eventually(lambda: bed.nodes[2].info()["ControlAvailable"] is True, 60)
        assert eventually(lambda: sorted(manager_status(bed.nodes[1]).values()) == ["Leader", "Reachable",
                                                                                    "Reachable"], 60)

        leader = next(n for n in bed.nodes if manager_status(n)[n.info()["NodeID"]] == "Leader")
        others = [n for n in bed.nodes if n is not leader]
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
