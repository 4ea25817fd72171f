"""Multi-node Swarm on the cluster test bed (test/lib/cluster.py), through the real docker CLI against each
node's socket: joins as worker and manager, node ls from every manager, leave and node rm, promote and
demote, tasks spread over the nodes, a worker killed, managers lost and back, drain, global services."""
from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from collections.abc import Iterator

import pytest
from lib.cluster import Bed, Node, cluster, eventually

pytestmark = pytest.mark.cluster

def nodes_table(node: Node) -> list[dict[str, str]]:
    lines = node.out("node", "ls", "--format", "{{json .}}").splitlines()
    return [json.loads(line) for line in lines]


def running_on(bed: Bed, service: str) -> dict[int, int]:
    """Running task containers of ``service`` on each live node (``docker ps`` against each node's socket)."""
    counts = {}
    for node in bed.nodes:
        if node.daemon.proc is None or node.daemon.proc.poll() is not None:
            continue
        out = node.out("ps", "-q", "--filter", f"label=com.docker.swarm.service.name={service}")
        counts[node.index] = len(out.split())
    return counts


def task_nodes(node: Node, service: str) -> Counter[str]:
    """Tasks of ``service`` the manager says run, per node ID."""
    ids = node.out("service", "ps", service, "-q", "--filter", "desired-state=running").split()
    tasks = json.loads(node.out("inspect", "--type", "task", *ids)) if ids else []
    return Counter(t["NodeID"] for t in tasks if t["Status"]["State"] == "running")


def _round2(node: Node) -> bool:
    """The one running task container of ``everywhere`` on ``node`` has the updated environment."""
    ids = node.out("ps", "-q", "--filter", "label=com.docker.swarm.service.name=everywhere").split()
    if len(ids) != 1:
        return False
    return "ROUND=2" in json.loads(node.out("inspect", ids[0]))[0]["Config"]["Env"]


def node_ids(bed: Bed) -> dict[int, str]:
    return {n.index: n.info()["NodeID"] for n in bed.nodes}


@pytest.fixture(scope="module")
def bed3() -> Iterator[Bed]:
    """One manager, two workers, for the tests that do not change the managers."""
    with cluster(3, managers=1) as bed:
        yield bed


def test_join_worker_and_node_ls(bed3: Bed) -> None:
    manager, w1, w2 = bed3.nodes
    for worker in (w1, w2):
        swarm = worker.info()
        assert swarm["LocalNodeState"] == "active" and swarm["ControlAvailable"] is False
        assert swarm["NodeAddr"] == worker.address
        # a worker is no manager: moby's 503
        denied = worker.docker("node", "ls", check=False)
        assert denied.returncode != 0 and "This node is not a swarm manager" in denied.stderr
    assert eventually(lambda: sorted(r["Status"] for r in nodes_table(manager)) == ["Ready"] * 3, 30)
    table = {r["ID"]: r for r in nodes_table(manager)}
    ids = node_ids(bed3)
    assert table[ids[0]]["ManagerStatus"] == "Leader"
    assert table[ids[1]]["ManagerStatus"] == "" and table[ids[2]]["ManagerStatus"] == ""
    assert all(r["Availability"] == "Active" for r in table.values())
    inspect = json.loads(manager.out("node", "inspect", ids[1]))[0]
    assert inspect["Spec"]["Role"] == "worker" and inspect["Status"]["Addr"] == w1.address


def test_join_refused(bed3: Bed) -> None:
    manager, w1, _ = bed3.nodes
    token = manager.out("swarm", "join-token", "-q", "worker")
    again = w1.docker("swarm", "join", "--token", token, f"{manager.address}:2377", check=False)
    assert again.returncode != 0 and "This node is already part of a swarm" in again.stderr


# a task's hostname is its container's short ID: the answer tells which task took the connection
WEB = ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www"]


def fetch(client: Node | None, address: str, port: int) -> str:
    """GET http://address:port/ from inside ``client``'s network namespace (None: from the host); "" on failure."""
    argv = ("wget", "-q", "--no-proxy", "-t", "1", "-T", "3", "-O", "-", f"http://{address}:{port}/")
    if client is None:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    else:
        done = client.run_in(*argv, check=False)
    return done.stdout.strip() if done.returncode == 0 else ""


def task_hostnames(bed: Bed, service: str) -> set[str]:
    return {c[:12] for node in bed.nodes
            for c in node.out("ps", "-q", "--no-trunc", "--filter", f"label=com.docker.swarm.service.name={service}")
            .split()}


def ingress_gone(node: Node, ingress_id: str) -> bool:
    """No ingress segment left on the node once nothing publishes a port (its endpoint given back)."""
    return node.run_in("ip", "link", "show", f"nwo{ingress_id[:12].lower()}", check=False).returncode != 0


def test_routing_mesh_across_nodes(bed3: Bed) -> None:
    """-p P:80 with both tasks on one worker answers on all three nodes' addresses (from the host and from
    inside each node), over the ingress overlay; tasks on the two workers are both reached through the
    manager, which runs none; the tasks sit on ingress first, with swarmkit's NetworksAttachments, and the
    service shows its ingress VIP."""
    manager, w1, w2 = bed3.nodes
    ids = node_ids(bed3)
    port = 18000 + bed3.slot
    manager.out("service", "create", "--detach", "--name", "meshone", "--replicas", "2", "--constraint",
                f"node.id=={ids[1]}", "-p", f"{port}:80", "busybox", *WEB)
    try:
        assert eventually(lambda: running_on(bed3, "meshone") == {0: 0, 1: 2, 2: 0}, 90), running_on(bed3, "meshone")
        hostnames = task_hostnames(bed3, "meshone")
        for client in (None, manager, w1, w2):
            for node in bed3.nodes:
                assert eventually(lambda c=client, n=node: fetch(c, n.address, port) in hostnames, 60), \
                    (client and client.index, node.index, manager.run_in("iptables-save", "-t", "nat").stdout)
        assert fetch(manager, "127.0.0.1", port) in hostnames  # the node's loopback too
        seen = {fetch(None, w2.address, port) for _ in range(8)}
        assert seen == hostnames, seen  # balanced over both tasks, from a node running neither
        service = json.loads(manager.out("service", "inspect", "meshone"))[0]
        ingress = json.loads(manager.out("network", "inspect", "ingress"))[0]
        assert [v["NetworkID"] for v in service["Endpoint"]["VirtualIPs"]] == [ingress["Id"]]
        subnet = ingress["IPAM"]["Config"][0]["Subnet"]
        assert service["Endpoint"]["VirtualIPs"][0]["Addr"].endswith("/" + subnet.split("/")[1])
        tasks = [t for t in json.loads(manager.out("inspect", "--type", "task",
                                                   *manager.out("service", "ps", "-q", "meshone").split()))
                 if t["Status"]["State"] == "running"]
        assert len(tasks) == 2
        for task in tasks:
            (attachment,) = task["NetworksAttachments"]
            assert attachment["Network"]["ID"] == ingress["Id"] and attachment["Network"]["Spec"]["Ingress"]
            assert attachment["Addresses"][0].rsplit(".", 1)[0] == subnet.rsplit(".", 1)[0]

        # a task on each worker: connections through the manager reach both
        manager.out("service", "create", "--detach", "--name", "meshtwo", "--mode", "global", "--constraint",
                    "node.role==worker", "-p", f"{port + 1}:80", "busybox", *WEB)
        assert eventually(lambda: running_on(bed3, "meshtwo") == {0: 0, 1: 1, 2: 1}, 90), running_on(bed3, "meshtwo")
        pair = task_hostnames(bed3, "meshtwo")
        assert eventually(lambda: fetch(manager, manager.address, port + 1) in pair, 60)
        seen = {fetch(manager, manager.address, port + 1) for _ in range(8)}
        assert seen == pair, seen

        # a node whose FORWARD policy is DROP (moby's DOCKER-INGRESS case): the mesh's own accept chain, jumped
        # to from the top of FORWARD, still lets the connections through it reach the tasks on the other node
        forward = w2.run_in("iptables", "-w", "-S", "FORWARD").stdout.splitlines()
        assert any(rule.startswith("-A FORWARD -j NW-MESHFWD-") for rule in forward), forward
        policy = forward[0].split()[-1]  # "-P FORWARD ACCEPT"
        w2.run_in("iptables", "-w", "-P", "FORWARD", "DROP")
        try:
            for client in (None, manager):
                assert eventually(lambda c=client: fetch(c, w2.address, port) in hostnames, 20), \
                    (client and client.index, w2.run_in("iptables-save").stdout)
            assert eventually(lambda: fetch(manager, w2.address, port + 1) in pair, 20)
        finally:
            w2.run_in("iptables", "-w", "-P", "FORWARD", policy)
    finally:
        manager.docker("service", "rm", "meshone", "meshtwo", check=False)
    ingress_id = json.loads(manager.out("network", "inspect", "ingress"))[0]["Id"]
    for node in bed3.nodes:
        assert eventually(lambda n=node: n.out("ps", "-aq", "--filter", "label=com.docker.swarm.service.name")
                          == "", 60)
        assert eventually(lambda n=node: ingress_gone(n, ingress_id), 30)
        assert fetch(node, node.address, port) == ""
        # nothing published: the FORWARD accept chain and its jump are gone too
        assert eventually(lambda n=node: "NW-MESHFWD-" not in n.run_in("iptables-save", "-t", "filter").stdout, 30)


def test_host_mode_publish_binds_only_where_the_task_runs(bed3: Bed) -> None:
    manager, w1, w2 = bed3.nodes
    ids = node_ids(bed3)
    port = 18500 + bed3.slot
    manager.out("service", "create", "--detach", "--name", "hostport", "--constraint", f"node.id=={ids[2]}",
                "--publish", f"mode=host,target=80,published={port}", "busybox", *WEB)
    try:
        assert eventually(lambda: running_on(bed3, "hostport") == {0: 0, 1: 0, 2: 1}, 90)
        (hostname,) = task_hostnames(bed3, "hostport")
        assert eventually(lambda: fetch(None, w2.address, port) == hostname, 30)
        assert fetch(manager, w2.address, port) == hostname
        for node in (manager, w1):  # no mesh for host-mode ports: nothing answers where no task runs
            assert fetch(None, node.address, port) == ""
            assert fetch(node, node.address, port) == ""
        service = json.loads(manager.out("service", "inspect", "hostport"))[0]
        assert "VirtualIPs" not in service["Endpoint"]  # not on ingress, on no overlay
    finally:
        manager.docker("service", "rm", "hostport", check=False)
    assert eventually(lambda: w2.out("ps", "-aq", "--filter", "label=com.docker.swarm.service.name") == "", 60)


def test_spread_and_worker_killed(bed3: Bed) -> None:
    manager = bed3.nodes[0]
    manager.out("service", "create", "--detach", "--name", "spread", "--replicas", "6", "busybox", "sleep", "1d")
    try:
        assert eventually(lambda: running_on(bed3, "spread") == {0: 2, 1: 2, 2: 2}, 90), \
            manager.out("service", "ps", "spread")
        ids = node_ids(bed3)
        victim = bed3.nodes[2]
        killed = time.monotonic()
        victim.kill9()
        assert eventually(lambda: {r["ID"]: r["Status"] for r in nodes_table(manager)}[ids[2]] == "Down", 20)
        down_after = time.monotonic() - killed
        assert eventually(lambda: sum(task_nodes(manager, "spread").values()) == 6
                          and ids[2] not in task_nodes(manager, "spread")
                          and sum(running_on(bed3, "spread").values()) == 6, 40)
        moved_after = time.monotonic() - killed
        print(f"worker down after {down_after:.1f}s, its tasks running elsewhere after {moved_after:.1f}s")
        assert moved_after < 30  # the bound docs/swarm.md states: heartbeat 5 s + a pass + task start
        victim.daemon.start(timeout=120)  # back: ready again, its old task containers are stopped
        assert eventually(lambda: {r["ID"]: r["Status"] for r in nodes_table(manager)}[ids[2]] == "Ready", 30)
    finally:
        manager.out("service", "rm", "spread")
    for node in bed3.nodes:
        assert eventually(lambda n=node: n.out("ps", "-aq", "--filter", "label=com.docker.swarm.service.name=spread")
                          == "", 60)


def test_drain_moves_tasks_off(bed3: Bed) -> None:
    manager = bed3.nodes[0]
    ids = node_ids(bed3)
    manager.out("service", "create", "--detach", "--name", "drainme", "--replicas", "3", "busybox", "sleep", "1d")
    try:
        assert eventually(lambda: sum(running_on(bed3, "drainme").values()) == 3, 90)
        manager.out("node", "update", "--availability", "drain", ids[1])
        assert eventually(lambda: running_on(bed3, "drainme").get(1) == 0
                          and sum(running_on(bed3, "drainme").values()) == 3, 60), running_on(bed3, "drainme")
        row = {r["ID"]: r for r in nodes_table(manager)}[ids[1]]
        assert row["Availability"] == "Drain"
    finally:
        manager.out("node", "update", "--availability", "active", ids[1])
        manager.out("service", "rm", "drainme")


def test_global_service_one_per_node_and_rolling_update(bed3: Bed) -> None:
    manager = bed3.nodes[0]
    manager.out("service", "create", "--detach", "--name", "everywhere", "--mode", "global", "--stop-grace-period",
                "1s", "--update-parallelism", "1", "--update-delay", "1s", "busybox", "sleep", "1d")
    try:
        assert eventually(lambda: running_on(bed3, "everywhere") == {0: 1, 1: 1, 2: 1}, 90)
        manager.out("service", "update", "--detach", "--env-add", "ROUND=2", "everywhere")
        # one node at a time: never fewer than two running while the update goes through (counted in one
        # read of the store: three `docker ps` in a row on a loaded machine span more than the update delay,
        # and saw one node before its turn and the next after)
        seen_min, updated = 3, {}
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            states = manager.out("service", "ps", "everywhere", "--format", "{{.CurrentState}}").splitlines()
            seen_min = min(seen_min, sum(state.startswith("Running") for state in states))
            counts = running_on(bed3, "everywhere")
            updated = {node.index: _round2(node) for node in bed3.nodes}
            if all(updated.values()) and counts == {0: 1, 1: 1, 2: 1}:
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"{updated}\n{manager.out('service', 'ps', 'everywhere')}")
        assert seen_min >= 2
    finally:
        manager.out("service", "rm", "everywhere")


def test_leave_rm_bad_tokens_and_rejoin(bed3: Bed) -> None:
    manager, _, worker = bed3.nodes
    old_id = worker.info()["NodeID"]
    worker.out("swarm", "leave")
    assert worker.info()["LocalNodeState"] == "inactive"
    assert eventually(lambda: {r["ID"]: r["Status"] for r in nodes_table(manager)}[old_id] == "Down", 20)
    manager.out("node", "rm", old_id)
    assert old_id not in {r["ID"] for r in nodes_table(manager)}

    token = manager.out("swarm", "join-token", "-q", "worker")
    prefix, digest, secret = token.rsplit("-", 2)
    other_digest = ("0" if digest[0] != "0" else "1") + digest[1:]
    wrong_ca = worker.docker("swarm", "join", "--token", f"{prefix}-{other_digest}-{secret}",
                             f"{manager.address}:2377", check=False)
    assert wrong_ca.returncode != 0
    assert f"remote CA does not match fingerprint. Expected: {other_digest}" in wrong_ca.stderr
    other_secret = ("a" if secret[0] != "a" else "b") + secret[1:]
    wrong_secret = worker.docker("swarm", "join", "--token", f"{prefix}-{digest}-{other_secret}",
                                 f"{manager.address}:2377", check=False)
    assert wrong_secret.returncode != 0
    assert "A valid join token is necessary to join this cluster" in wrong_secret.stderr
    malformed = worker.docker("swarm", "join", "--token", "SWMTKN-1-nope", f"{manager.address}:2377", check=False)
    assert malformed.returncode != 0 and "invalid join token" in malformed.stderr
    assert worker.info()["LocalNodeState"] == "inactive"  # nothing of a refused join is kept

    worker.out("swarm", "join", "--token", token, "--advertise-addr", worker.address, f"{manager.address}:2377")
    new_id = worker.info()["NodeID"]
    assert new_id != old_id
    assert eventually(lambda: {r["ID"]: r["Status"] for r in nodes_table(manager)}.get(new_id) == "Ready", 30)


def test_worker_cable_cut(bed3: Bed) -> None:
    """The worker's link down: it is marked down and its tasks run elsewhere; link back: ready again and the
    containers of its replaced tasks are stopped."""
    manager, cut = bed3.nodes[0], bed3.nodes[1]
    cut_id = cut.info()["NodeID"]
    manager.out("service", "create", "--detach", "--name", "cable", "--replicas", "3", "--stop-grace-period", "1s",
                "busybox", "sleep", "1d")
    try:
        assert eventually(lambda: running_on(bed3, "cable").get(1, 0) >= 1
                          and sum(running_on(bed3, "cable").values()) == 3, 90)
        cut.link(False)
        try:
            assert eventually(lambda: {r["ID"]: r["Status"] for r in nodes_table(manager)}[cut_id] == "Down", 20)
            assert eventually(lambda: cut_id not in task_nodes(manager, "cable")
                              and sum(task_nodes(manager, "cable").values()) == 3, 40)
        finally:
            cut.link(True)
        assert eventually(lambda: {r["ID"]: r["Status"] for r in nodes_table(manager)}[cut_id] == "Ready", 40)
        assert eventually(lambda: running_on(bed3, "cable").get(1) == 0, 60)
    finally:
        manager.out("service", "rm", "cable")


def test_rolling_update_rolls_back_on_failure(bed3: Bed) -> None:
    """A replicated service over three nodes updated one task at a time to a command that fails: the update
    is rolled back (--update-failure-action rollback) and every replica runs the old spec again."""
    manager = bed3.nodes[0]
    manager.out("service", "create", "--detach", "--name", "rollme", "--replicas", "3", "--stop-grace-period", "1s",
                "--update-parallelism", "1", "--update-monitor", "3s", "--update-failure-action", "rollback",
                "busybox", "sleep", "1d")
    try:
        assert eventually(lambda: sum(running_on(bed3, "rollme").values()) == 3
                          and len([n for n in running_on(bed3, "rollme").values() if n]) >= 2, 90)
        manager.out("service", "update", "--detach", "--args", "false", "rollme")

        def rolled_back() -> bool:
            status = json.loads(manager.out("service", "inspect", "rollme"))[0].get("UpdateStatus") or {}
            return status.get("State") == "rollback_completed"

        assert eventually(rolled_back, 120), manager.out("service", "ps", "rollme")
        spec = json.loads(manager.out("service", "inspect", "rollme"))[0]["Spec"]
        assert spec["TaskTemplate"]["ContainerSpec"]["Args"] == ["sleep", "1d"]
        assert eventually(lambda: sum(running_on(bed3, "rollme").values()) == 3, 60)
    finally:
        manager.out("service", "rm", "rollme")
