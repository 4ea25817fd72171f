"""The routing mesh's plan and iptables text (pkg/docker/swarm/mesh.py), and ingress port allocation."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pkg import errors
from pkg.docker.swarm import mesh, services

Obj = dict[str, Any]


def service(sid: str, ports: list[Obj]) -> Obj:
    return {"ID": sid, "Endpoint": {"Ports": ports}}


def task(tid: str, sid: str, slot: int, node: str = "n1", state: str = "running", desired: str = "running",
         attachments: list[Obj] | None = None) -> Obj:
    return {"ID": tid, "ServiceID": sid, "Slot": slot, "NodeID": node, "DesiredState": desired,
            "Status": {"State": state}, "NetworksAttachments": attachments}


INGRESS = {"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "ingress"}


def test_plan_running_tasks_in_slot_order_remote_ones_through_ingress_only() -> None:
    addrs = {"t1": "10.1.0.2", "t2": "10.1.0.3", "t3": "10.1.0.4"}
    tasks = [task("t2", "s", 2), task("t1", "s", 1), task("t3", "s", 3, state="starting"),
             task("t4", "s", 4, desired="shutdown"),
             task("r1", "s", 5, node="n2", attachments=[
                 {"Network": {"Spec": {"Name": "ingress"}}, "Addresses": ["10.0.0.7/24"]}]),
             task("r2", "s", 6, node="n2")]  # remote without an ingress address: unreachable
    host = {**INGRESS, "PublishMode": "host", "PublishedPort": 9090}
    plan = mesh.plan([service("s", [INGRESS, host]), service("other", [])], tasks, "n1", lambda t: addrs.get(t["ID"]))
    assert plan == [mesh.Published("tcp", 8080, 80, ("10.1.0.2", "10.1.0.3", "10.0.0.7"))]


def test_restore_input_round_robin_and_masquerade() -> None:
    text = mesh.restore_input("abcd1234", [mesh.Published("tcp", 8080, 80, ("10.1.0.2", "10.1.0.3", "10.1.0.4")),
                                           mesh.Published("udp", 53, 5353, ())])
    lines = text.splitlines()
    assert lines[:3] == ["*nat", ":NW-MESH-abcd1234 - [0:0]", ":NW-MESHMQ-abcd1234 - [0:0]"]
    assert lines[-1] == "COMMIT"
    dnat = [line for line in lines if line.startswith("-A NW-MESH-abcd1234 ")]
    assert dnat == [
        "-A NW-MESH-abcd1234 -p tcp -m tcp --dport 8080 -m statistic --mode nth --every 3 --packet 0 "
        "-j DNAT --to-destination 10.1.0.2:80",
        "-A NW-MESH-abcd1234 -p tcp -m tcp --dport 8080 -m statistic --mode nth --every 2 --packet 0 "
        "-j DNAT --to-destination 10.1.0.3:80",
        "-A NW-MESH-abcd1234 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.1.0.4:80",
    ]  # no rule at all for a port with no running task
    masq = [line for line in lines if line.startswith("-A NW-MESHMQ-abcd1234 ")]
    assert len(masq) == 3 and all("--ctorigdstport 8080 -j MASQUERADE" in m for m in masq)
    assert mesh.chains("abcd1234") == ("NW-MESH-abcd1234", "NW-MESHMQ-abcd1234")
    assert all(len(c) <= 28 for c in mesh.chains("abcd1234"))  # iptables' limit on chain names


class _Store:
    """The one store call ``services.endpoint`` makes: the other services."""

    def __init__(self, services: list[Obj]) -> None:
        self.services = services

    async def list(self, kind: str) -> list[Obj]:
        assert kind == "services"
        return self.services


def test_endpoint_ports_as_swarmkits_allocator() -> None:
    web = {"ID": "w", "Spec": {"Name": "web"}, "Endpoint": {"Ports": [INGRESS]}}
    store: Any = _Store([web])

    def endpoint(ports: list[Obj], previous: Obj | None = None, mode: str = "vip") -> Obj:
        spec = {"EndpointSpec": {"Mode": mode, "Ports": ports}}
        return asyncio.run(services.endpoint(store, spec, "new", previous))

    got = endpoint([{"TargetPort": 80}, {"TargetPort": 81, "PublishedPort": 9000, "PublishMode": "host"}])
    assert got["Ports"] == [
        {"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 30000, "PublishMode": "ingress"},
        {"Protocol": "tcp", "TargetPort": 81, "PublishedPort": 9000, "PublishMode": "host"}]
    kept = endpoint([{"TargetPort": 80}], previous={"Ports": [{**INGRESS, "PublishedPort": 31000}]})
    assert kept["Ports"][0]["PublishedPort"] == 31000  # an update keeps the allocated port
    with pytest.raises(errors.InvalidArgument, match="port '8080' is already in use by service 'web' \\(w\\) as an "
                       "ingress port"):
        endpoint([{"TargetPort": 80, "PublishedPort": 8080}])
    assert endpoint([{"TargetPort": 80, "PublishedPort": 8080, "Protocol": "udp"}])["Ports"][0]["PublishedPort"] == 8080
    with pytest.raises(errors.InvalidArgument, match="duplicate published ports"):
        endpoint([{"TargetPort": 80, "PublishedPort": 9100}, {"TargetPort": 81, "PublishedPort": 9100}])
    with pytest.raises(errors.InvalidArgument, match="can't be used with dnsrr mode"):
        endpoint([{"TargetPort": 80}], mode="dnsrr")
    assert endpoint([]) == {"Spec": {"Mode": "vip", "Ports": []}}
