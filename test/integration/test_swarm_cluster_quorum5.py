"""Raft's quorum with five managers on the cluster test bed (test/lib/cluster.py): five etcd members over mTLS;
two of five lost, the three left are a majority and keep accepting updates; a third lost, every manager call
gets moby's "no leader" error while the running tasks keep running; one back, three of five again, updates
are accepted.  (Five managers tolerate ⌊(5-1)/2⌋ = 2 lost, as moby's `docker node` docs put it.)"""
from __future__ import annotations

import json
import time

import pytest
from lib.cluster import Node, cluster, eventually

pytestmark = pytest.mark.cluster5

NO_LEADER = ("The swarm does not have a leader. It's possible that too few managers are online. Make sure more "
             "than half of the managers are online.")


def manager_status(node: Node) -> dict[str, str]:
    rows = (json.loads(line) for line in node.out("node", "ls", "--format", "{{json .}}").splitlines())
    return {r["ID"]: r["ManagerStatus"] for r in rows if r["ManagerStatus"]}


def replicas_spec(node: Node, service: str) -> int:
    spec = json.loads(node.out("service", "inspect", service))[0]["Spec"]
    return int(spec["Mode"]["Replicated"]["Replicas"])


def task_containers(node: Node, service: str) -> set[str]:
    return set(node.out("ps", "-q", "--filter", f"label=com.docker.swarm.service.name={service}").split())


def lose(node: Node) -> None:
    """The machine goes: narwhald and its etcd member killed (its task containers stay, as on a dead host
    whose processes nobody stopped)."""
    node.kill9()
    node.stop_etcd()


def test_five_managers_lose_two_then_three() -> None:
    started = time.monotonic()
    with cluster(5, managers=5) as bed:
        formed = time.monotonic()
        ids = {n.index: n.info()["NodeID"] for n in bed.nodes}
        assert all(n.info()["ControlAvailable"] for n in bed.nodes)
        assert eventually(lambda: sorted(manager_status(bed.nodes[0]).values()) == ["Leader"] + ["Reachable"] * 4,
                          60)
        leader = next(n for n in bed.nodes if manager_status(n)[ids[n.index]] == "Leader")
        others = [n for n in bed.nodes if n is not leader]
        first = others[0]
        first.out("service", "create", "--detach", "--name", "q", "--replicas", "5", "--stop-grace-period", "1s",
                  "busybox", "sleep", "1d")
        assert eventually(lambda: first.out("service", "ls", "--format", "{{.Replicas}}") == "5/5", 90)

        # two of five gone (one of them the leader): three members are a majority, updates go on
        lost2 = time.monotonic()
        lose(leader)
        lose(others[3])
        survivors = others[:3]
        # (a write may wait out etcd's election of a new Raft leader first)
        assert eventually(lambda: survivors[0].docker("service", "scale", "--detach", "q=6", check=False)
                          .returncode == 0, 30)
        assert eventually(lambda: replicas_spec(survivors[1], "q") == 6, 30)
        assert eventually(lambda: "Leader" in manager_status(survivors[2]).values()
                          and manager_status(survivors[2])[ids[leader.index]] == "Unreachable", 60)
        print(f"2 of 5 lost: update accepted and a new leader after {time.monotonic() - lost2:.1f}s")

        # three of five gone: no quorum; refused with moby's error, the survivors' tasks keep running
        last, other = survivors[0], survivors[1]
        running = task_containers(last, "q")
        lose(survivors[2])
        lost3 = time.monotonic()
        assert eventually(lambda: NO_LEADER in last.docker("service", "scale", "--detach", "q=7",
                                                           check=False).stderr, 60)
        print(f"3 of 5 lost: refused after {time.monotonic() - lost3:.1f}s")
        assert NO_LEADER in other.docker("node", "ls", check=False).stderr
        assert running <= task_containers(last, "q")

        # one comes back: three of five, a quorum again
        survivors[2].daemon.start(timeout=120)
        assert eventually(lambda: last.docker("service", "scale", "--detach", "q=4", check=False).returncode == 0, 90)
        assert eventually(lambda: replicas_spec(other, "q") == 4, 30)
        other.out("service", "rm", "q")
        print(f"formed in {formed - started:.1f}s, whole test {time.monotonic() - started:.1f}s before teardown")
