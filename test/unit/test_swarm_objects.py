"""Swarm's pure pieces: IDs and tokens in swarmkit's shapes, spec defaults, the task -> container config,
restart-policy decisions, secret validation."""
from __future__ import annotations

import re
import time

import pytest

from pkg import errors
from pkg.docker.swarm import keys, objects, secrets
from pkg.docker.swarm.executor import container_config
from pkg.docker.swarm.orchestrator import Orchestrator


def test_ids_and_tokens_have_swarmkits_shape() -> None:
    ids = {objects.new_id() for _ in range(50)}
    assert len(ids) == 50 and all(re.fullmatch(r"[0-9a-z]{25}", i) for i in ids)
    digest = objects.ca_digest(b"root ca")
    token = objects.join_token(digest)
    assert re.fullmatch(r"SWMTKN-1-[0-9a-z]{50}-[0-9a-z]{25}", token)
    assert token.split("-")[2] == digest and objects.join_token(digest) != token
    assert re.fullmatch(r"SWMKEY-1-[A-Za-z0-9+/]{43}", keys.new_unlock_key())


def test_time_round_trip() -> None:
    stamp = objects.now()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", stamp)
    assert abs(objects.parse_time(stamp) - time.time()) < 5


def test_merge_spec_keeps_defaults_for_zeros() -> None:
    spec = objects.merge_spec(objects.default_cluster_spec(),
                              {"Raft": {"ElectionTick": 0, "SnapshotInterval": 5000}, "Labels": {"a": "b"}})
    assert spec["Raft"]["ElectionTick"] == 10 and spec["Raft"]["SnapshotInterval"] == 5000
    assert spec["Labels"] == {"a": "b"} and spec["Orchestration"]["TaskHistoryRetentionLimit"] == 5


def test_service_defaults_fill_what_swarmkit_fills() -> None:
    spec = objects.service_defaults({"Name": "web", "TaskTemplate": {"ContainerSpec": {"Image": "busybox"}}})
    assert spec["TaskTemplate"]["RestartPolicy"] == {"Condition": "any", "Delay": 5_000_000_000, "MaxAttempts": 0}
    assert spec["Mode"] == {"Replicated": {"Replicas": 1}}
    assert spec["UpdateConfig"]["Order"] == "stop-first" and spec["EndpointSpec"] == {"Mode": "vip"}


def _service() -> objects.Obj:
    return {"ID": "svc", "Version": {"Index": 7}, "Spec": {
        "Name": "web", "Mode": {"Replicated": {"Replicas": 2}},
        "TaskTemplate": {"ContainerSpec": {"Image": "busybox", "Command": ["sh"], "Args": ["-c", "true"],
                                           "Env": ["A=1"], "Hosts": ["10.0.0.1 db"], "StopGracePeriod": 3_000_000_000},
                         "Resources": {"Limits": {"MemoryBytes": 1 << 20}}}}}


def test_task_container_config() -> None:
    service = _service()
    task = objects.new_task(service, 2, "node1")
    assert task["Status"]["State"] == "assigned" and task["Slot"] == 2 and task["ServiceVersion"] == 7
    assert objects.task_name("web", task) == f"web.2.{task['ID']}"
    spec, host = container_config(task, service, "node1", [])
    assert spec.entrypoint == ("sh",) and spec.cmd == ("-c", "true") and spec.env == ("A=1",)
    assert spec.labels["com.docker.swarm.task.id"] == task["ID"]
    assert spec.labels["com.docker.swarm.task.name"] == "web.2"
    assert spec.stop_timeout == 3 and host.extra_hosts == ("db:10.0.0.1",) and host.resources.memory == 1 << 20


def _ended(state: str, created: float) -> objects.Obj:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime(created))
    return {"ID": objects.new_id(), "CreatedAt": stamp, "Status": {"State": state, "Timestamp": stamp},
            "Spec": {"RestartPolicy": {"Condition": "on-failure", "MaxAttempts": 2}}}


def test_restart_policy_decisions() -> None:
    now = time.time()
    first = _ended("failed", now - 3)
    assert Orchestrator._may_restart({}, [first], first)
    done = _ended("complete", now)
    assert not Orchestrator._may_restart({}, [done], done)  # on-failure: a clean exit stays down
    second, third = _ended("failed", now - 2), _ended("failed", now - 1)
    assert not Orchestrator._may_restart({}, [first, second, third], third)  # 2 restarts used up
    none = _ended("failed", now)
    none["Spec"]["RestartPolicy"] = {"Condition": "none"}
    assert not Orchestrator._may_restart({}, [none], none)


@pytest.mark.parametrize("spec, message", [
    ({"Name": "-bad", "Data": "eA=="}, "invalid name"),
    ({"Name": "ok", "Data": ""}, "secret data must be larger than 0 and less than 500KB"),
    ({"Name": "ok", "Data": "not base64!"}, "base64"),
])
def test_secret_validation(spec: objects.Obj, message: str) -> None:
    with pytest.raises(errors.InvalidArgument) as err:
        secrets._validate("secrets", spec)
    assert message in err.value.message


def test_swarm_etcd_endpoints_config() -> None:
    from pkg.config import build

    assert build({"swarm-etcd-endpoints": "10.0.0.5:2379, http://10.0.0.6:2379"}, {}).swarm_etcd_endpoints == [
        "10.0.0.5:2379", "http://10.0.0.6:2379"]
    with pytest.raises(errors.InvalidArgument, match="https:// endpoints need swarm-etcd-ca-file"):
        build({"swarm-etcd-endpoints": ["https://10.0.0.5:2379"]}, {})
    with pytest.raises(errors.InvalidArgument, match="swarm-etcd-endpoints"):
        build({"swarm-etcd-endpoints": ["10.0.0.5"]}, {})


def test_placement_constraints() -> None:
    from pkg.docker.swarm import placement

    node = {"ID": "n1", "Spec": {"Role": "manager", "Labels": {"zone": "Moon"}},
            "Description": {"Hostname": "vm", "Platform": {"OS": "linux", "Architecture": "x86_64"},
                            "Resources": {"NanoCPUs": 2_000_000_000, "MemoryBytes": 1 << 30}},
            "Status": {"Addr": "127.0.0.1"}}
    assert placement.satisfies(node, placement.parse(["node.role == Manager", "node.hostname!=other"]))
    assert placement.satisfies(node, placement.parse(["node.labels.zone==Moon"]))
    assert not placement.satisfies(node, placement.parse(["node.labels.zone==moon"]))  # label values: exact
    assert not placement.satisfies(node, placement.parse(["node.labels.missing==x"]))
    with pytest.raises(errors.InvalidArgument, match="invalid constraint"):
        placement.parse(["node.role=manager"])
    task = {"Spec": {"Resources": {"Reservations": {"MemoryBytes": 1 << 29}}}}
    assert placement.fits(node, task, (0, 0)) and not placement.fits(node, task, (0, 1 << 30))
    assert placement.no_node_reason([node], {"Spec": {"Placement": {"Constraints": ["node.role==worker"]}}}) == \
        "no suitable node (scheduling constraints not satisfied on 1 node)"
