"""The routing mesh's plan and iptables text (pkg/docker/swarm/mesh.py), and ingress port allocation."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pkg import errors
from pkg.docker.swarm import allocation, executor, mesh, networks, services

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


def test_forward_chain_accepts_only_the_mesh_connections_while_a_port_is_published() -> None:
    """A FORWARD policy of DROP: the filter chain accepts the connections the mesh DNATed to each task, and
    their replies, by the published port they came to; no such chain at all while nothing is published."""
    fwd = mesh.forward_chain("abcd1234")
    assert fwd == "NW-MESHFWD-abcd1234" and len(fwd) <= 28
    text = mesh.restore_input("abcd1234", [mesh.Published("tcp", 8080, 80, ("10.0.0.3", "10.0.0.4")),
                                           mesh.Published("udp", 53, 5353, ())])
    lines = text.splitlines()
    assert lines[lines.index("*filter"):] == [
        "*filter",
        ":NW-MESHFWD-abcd1234 - [0:0]",
        "-A NW-MESHFWD-abcd1234 -p tcp -d 10.0.0.3/32 -m tcp --dport 80 -m conntrack --ctstate DNAT "
        "--ctorigdstport 8080 -j ACCEPT",
        "-A NW-MESHFWD-abcd1234 -p tcp -s 10.0.0.3/32 -m tcp --sport 80 -m conntrack --ctstate DNAT "
        "--ctorigdstport 8080 -j ACCEPT",
        "-A NW-MESHFWD-abcd1234 -p tcp -d 10.0.0.4/32 -m tcp --dport 80 -m conntrack --ctstate DNAT "
        "--ctorigdstport 8080 -j ACCEPT",
        "-A NW-MESHFWD-abcd1234 -p tcp -s 10.0.0.4/32 -m tcp --sport 80 -m conntrack --ctstate DNAT "
        "--ctorigdstport 8080 -j ACCEPT",
        "-A NW-MESHFWD-abcd1234 -p icmp -m conntrack --ctstate RELATED --ctproto tcp --ctorigdstport 8080 -j ACCEPT",
        "COMMIT",
    ]  # the nat table first, in the same restore; nothing for the port with no task
    assert lines.index("*filter") > lines.index("*nat")
    assert "*filter" not in mesh.restore_input("abcd1234", [])


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


def _attached(address: str, name: str = "ingress") -> list[Obj]:
    return [{"Network": {"ID": f"id-{name}", "Spec": {"Name": name}}, "Addresses": [address]}]


def test_plan_reaches_every_task_at_its_ingress_address_local_ones_too() -> None:
    tasks = [task("t1", "s", 1, attachments=_attached("10.0.0.3/24")),  # local, on ingress
             task("t2", "s", 2),  # local, started before ingress (no attachment): its container's address
             task("r1", "s", 3, node="n2", attachments=_attached("10.0.0.4/24"))]
    local = {"t1": "172.18.0.2", "t2": "172.18.0.3"}
    plan = mesh.plan([service("s", [INGRESS])], tasks, "n1", lambda t: local[t["ID"]])
    assert plan == [mesh.Published("tcp", 8080, 80, ("10.0.0.3", "172.18.0.3", "10.0.0.4"))]
    # connections to ingress addresses leave from this node's own ingress endpoint; the others are masqueraded
    text = mesh.restore_input("abcd1234", plan, mesh.Source("10.0.0.0/24", "10.0.0.2"))
    masq = [line for line in text.splitlines() if line.startswith("-A NW-MESHMQ-abcd1234 ")]
    assert masq == [
        "-A NW-MESHMQ-abcd1234 -p tcp -d 10.0.0.3/32 -m tcp --dport 80 -m conntrack --ctstate DNAT "
        "--ctorigdstport 8080 -j SNAT --to-source 10.0.0.2",
        "-A NW-MESHMQ-abcd1234 -p tcp -d 172.18.0.3/32 -m tcp --dport 80 -m conntrack --ctstate DNAT "
        "--ctorigdstport 8080 -j MASQUERADE",
        "-A NW-MESHMQ-abcd1234 -p tcp -d 10.0.0.4/32 -m tcp --dport 80 -m conntrack --ctstate DNAT "
        "--ctorigdstport 8080 -j SNAT --to-source 10.0.0.2",
    ]


def test_ingress_needed_as_swarmkit() -> None:
    assert networks.ingress_needed({"EndpointSpec": {"Ports": [{"TargetPort": 80}]}})  # ingress is the default
    assert not networks.ingress_needed({"EndpointSpec": {"Ports": [{"TargetPort": 80, "PublishMode": "host"}]}})
    assert not networks.ingress_needed({})


def _svc(mode: str = "vip", ports: list[Obj] | None = None, nets: tuple[str, ...] = ("ov1", "ov2")) -> Obj:
    return {"ID": "s1", "Spec": {"Name": "web", "EndpointSpec": {"Mode": mode, "Ports": ports or []},
                                 "TaskTemplate": {"Networks": [{"Target": n} for n in nets]}}}


def test_wanted_vips_ingress_first_without_a_name() -> None:
    assert allocation.wanted_vips(_svc(ports=[INGRESS]), "ing") == [("ing", ()), ("ov1", ("web",)), ("ov2", ("web",))]
    assert allocation.wanted_vips(_svc(), "ing") == [("ov1", ("web",)), ("ov2", ("web",))]
    host = {**INGRESS, "PublishMode": "host"}
    assert allocation.wanted_vips(_svc(ports=[host], nets=()), "ing") == []
    assert allocation.wanted_vips(_svc(mode="dnsrr"), "ing") == []  # dnsrr: no VIP anywhere
    assert allocation.wanted_vips(_svc(ports=[INGRESS], nets=()), "") == []  # no ingress network (yet)


def test_task_attachments_as_swarmkit_shows_them() -> None:
    records = [{"ID": "ing", "Spec": {"Name": "ingress", "Ingress": True}},
               {"ID": "ov1", "Spec": {"Name": "front"}}, {"ID": "ov2", "Spec": {"Name": "back"}}]
    t = {"Spec": {"Networks": [{"Target": "ov2"}, {"Target": "ov1"}]}}
    got = allocation.task_attachments(t, records, {"ingress": "10.0.0.3/24", "back": "10.0.2.5/24",
                                                   "front": "10.0.1.9/24"})
    assert got == [{"Network": records[0], "Addresses": ["10.0.0.3/24"]},
                   {"Network": records[2], "Addresses": ["10.0.2.5/24"]},
                   {"Network": records[1], "Addresses": ["10.0.1.9/24"]}]
    # not on ingress (no published port): only its own networks
    only_own = allocation.task_attachments(t, records, {"back": "10.0.2.5/24"})
    assert [a["Network"]["ID"] for a in only_own] == ["ov2", "ov1"] and "Addresses" not in only_own[1]
    assert allocation.task_attachments({"Spec": {}}, records, {"bridge": "172.17.0.2/16"}) == []


def test_task_joins_ingress_first_without_names() -> None:
    svc = {"ID": "s1", "Spec": {"Name": "web", "EndpointSpec": {"Ports": [INGRESS]}}}
    t = {"Spec": {"Networks": [{"Target": "ov1", "Aliases": ["w"]}]}}
    endpoints = executor.task_endpoints(t, svc, "ing")
    assert [(e.network, e.aliases) for e in endpoints] == [("ing", ()), ("ov1", ("tasks.web", "w"))]
    assert [e.network for e in executor.task_endpoints(t, svc)] == ["ov1"]
