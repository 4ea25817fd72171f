"""Services and tasks: create/list/inspect/update/remove as moby's cluster/services.go and tasks.go."""
from __future__ import annotations

import copy
import re
from typing import Any

from pkg import errors
from pkg.docker.swarm import mesh, objects, placement
from pkg.docker.swarm.lookup import find, labels_match
from pkg.docker.swarm.store import Store

Obj = dict[str, Any]

_DNS_LABEL = re.compile(r"^[a-zA-Z0-9](?:[-_]*[A-Za-z0-9]+)*$")


def _invalid(desc: str) -> errors.InvalidArgument:
    return errors.InvalidArgument(f"rpc error: code = InvalidArgument desc = {desc}")


async def validate_spec(store: Store, spec: Obj) -> Obj:
    """swarmkit's validateServiceSpec, for what Narwhal runs; returns the spec as stored."""
    spec = copy.deepcopy(spec)
    name = spec.get("Name") or ""
    if not name:
        spec["Name"] = name = objects.new_id()[:10]
    if len(name) > 63 or not _DNS_LABEL.match(name):
        raise _invalid("name must be valid as a DNS name component")
    template = spec.get("TaskTemplate") or {}
    spec["TaskTemplate"] = template
    if template.get("PluginSpec") or template.get("NetworkAttachmentSpec"):
        raise _invalid("only container tasks are supported")
    container = template.get("ContainerSpec")
    if not container or not container.get("Image"):
        raise _invalid("ContainerSpec: image reference must be provided")
    placement.constraints_of(template)  # refused here, not at scheduling
    spec.setdefault("Labels", {})
    template.setdefault("ForceUpdate", 0)  # moby's TaskSpec always carries it
    mode = spec.get("Mode") or {"Replicated": {"Replicas": 1}}
    if "ReplicatedJob" in mode:
        job = mode["ReplicatedJob"] or {}
        job["MaxConcurrent"] = int(job.get("MaxConcurrent") or 1)
        job["TotalCompletions"] = int(job.get("TotalCompletions") or job["MaxConcurrent"])
        mode = {"ReplicatedJob": job}
    elif "GlobalJob" in mode:
        mode = {"GlobalJob": {}}
    elif "Replicated" in mode:
        replicated = mode["Replicated"] or {}
        if replicated.get("Replicas") is None:
            replicated["Replicas"] = 1
        mode = {"Replicated": replicated}
    elif "Global" in mode:
        mode = {"Global": {}}
    spec["Mode"] = mode
    for kind, key, id_key, name_key in (("secrets", "Secrets", "SecretID", "SecretName"),
                                        ("configs", "Configs", "ConfigID", "ConfigName")):
        for ref in container.get(key) or []:
            obj = await store.get(kind, ref.get(id_key, ""))
            if obj is None:
                raise _invalid(f"{kind[:-1]} reference {ref.get(name_key) or ref.get(id_key)!r} not found")
    return spec


def warnings(spec: Obj) -> list[str]:
    """What the create/update answer warns about (nothing yet: moby warns about image digests only)."""
    return []


async def endpoint(store: Store, spec: Obj, service_id: str, previous: Obj | None) -> Obj:
    """The service's Endpoint as swarmkit's allocator leaves it: Spec, and Ports with every ingress
    port published (a free one of 30000-32767 when none is given, kept across updates), unique
    among the swarm's services."""
    endpoint_spec = copy.deepcopy(spec.get("EndpointSpec") or {})
    endpoint_spec.setdefault("Mode", "vip")
    ports: list[Obj] = []
    seen: set[tuple[Any, ...]] = set()
    for p in endpoint_spec.get("Ports") or []:
        port = {"Protocol": p.get("Protocol") or "tcp", "TargetPort": int(p.get("TargetPort") or 0),
                "PublishedPort": int(p.get("PublishedPort") or 0), "PublishMode": p.get("PublishMode") or "ingress"}
        if p.get("Name"):
            port["Name"] = p["Name"]
        if endpoint_spec["Mode"] == "dnsrr" and port["PublishMode"] == "ingress":
            raise _invalid("EndpointSpec: port published with ingress mode can't be used with dnsrr mode")
        key = (port["Protocol"], port["PublishedPort"])
        if port["PublishedPort"] and key in seen:
            raise _invalid("EndpointSpec: duplicate published ports provided")
        seen.add(key)
        ports.append(port)
    taken: dict[tuple[str, int], Obj] = {}
    for other in await store.list("services"):
        if other["ID"] != service_id:
            for p in (other.get("Endpoint") or {}).get("Ports") or []:
                if p.get("PublishMode") == "ingress" and p.get("PublishedPort"):
                    taken[(p["Protocol"], int(p["PublishedPort"]))] = other
    before = {(p["Protocol"], p["TargetPort"]): p["PublishedPort"]
              for p in (previous or {}).get("Ports") or [] if p.get("PublishMode") == "ingress"}
    for port in ports:
        if port["PublishMode"] != "ingress":
            continue
        if port["PublishedPort"]:
            owner = taken.get((port["Protocol"], port["PublishedPort"]))
            if owner is not None:
                raise _invalid(f"port '{port['PublishedPort']}' is already in use by service "
                               f"'{owner['Spec']['Name']}' ({owner['ID']}) as an ingress port")
            continue
        wanted = before.get((port["Protocol"], port["TargetPort"]), 0)
        used = {n for proto, n in taken if proto == port["Protocol"]} | {
            q["PublishedPort"] for q in ports if q["Protocol"] == port["Protocol"]}
        if not wanted or wanted in used:
            wanted = next((n for n in mesh.DYNAMIC_PORTS if n not in used), 0)
            if not wanted:
                raise _invalid("could not find an available port")
        port["PublishedPort"] = wanted
    out: Obj = {"Spec": endpoint_spec}
    if ports:
        out["Ports"] = ports
    return out


async def create(store: Store, spec: Obj) -> Obj:
    spec = await validate_spec(store, spec)
    stamp = objects.now()
    service_id = objects.new_id()
    service: Obj = {"ID": service_id, "CreatedAt": stamp, "UpdatedAt": stamp, "Spec": spec,
                    "Endpoint": await endpoint(store, spec, service_id, None)}
    return await store.create("services", service, name=spec["Name"])


async def update(store: Store, ref: str, version: int, spec: Obj, rollback: bool) -> Obj:
    service = await find(store, "services", ref)
    if service["Version"]["Index"] != version:
        raise errors.Internal("rpc error: code = Unknown desc = update out of sequence")
    if rollback:
        previous = service.get("PreviousSpec")
        if previous is None:
            raise errors.FailedPrecondition(
                f"rpc error: code = FailedPrecondition desc = service {service['ID']} does not have a previous spec")
        spec = previous
    spec = await validate_spec(store, spec)
    old = service["Spec"]
    if spec["Name"] != old["Name"]:
        raise errors.NotImplementedYet("rpc error: code = Unimplemented desc = renaming services is not supported")
    if set(spec["Mode"]) != set(old["Mode"]):
        raise _invalid("service mode change is not allowed")
    service["PreviousSpec"] = old
    service["Spec"] = spec
    service["Endpoint"] = await endpoint(store, spec, service["ID"], service.get("Endpoint"))
    stamp = objects.now()
    service["UpdatedAt"] = stamp
    if spec.get("TaskTemplate") != old.get("TaskTemplate"):
        # The orchestrator completes it once every task runs the new spec (the CLI's progress waits on it).
        service["UpdateStatus"] = {"State": "rollback_started" if rollback else "updating", "StartedAt": stamp,
                                   "Message": "manually requested rollback" if rollback else "update in progress"}
    return await store.update("services", service, version)


async def remove(store: Store, ref: str) -> Obj:
    service = await find(store, "services", ref)
    await store.delete("services", service["ID"], name=service["Spec"]["Name"])
    return service


def service_view(service: Obj, insert_defaults: bool) -> Obj:
    view = copy.deepcopy(service)
    if insert_defaults:
        view["Spec"] = objects.service_defaults(view["Spec"])
        if "PreviousSpec" in view:
            view["PreviousSpec"] = objects.service_defaults(view["PreviousSpec"])
    return view


async def list_services(store: Store, filters: dict[str, list[str]], status: bool) -> list[Obj]:
    services = await store.list("services")
    out = []
    for service in services:
        spec = service["Spec"]
        if "id" in filters and not any(service["ID"].startswith(v) for v in filters["id"]):
            continue
        if "name" in filters and not any(spec["Name"].startswith(v) for v in filters["name"]):
            continue
        if "label" in filters and not labels_match(spec.get("Labels") or {}, filters["label"]):
            continue
        if "mode" in filters:
            mode = "global" if "Global" in spec["Mode"] else "replicated"
            if mode not in filters["mode"]:
                continue
        out.append(service)
    if status:
        tasks = await store.list("tasks")
        nodes = await store.list("nodes")
        ready = {n["ID"] for n in nodes if n["Status"].get("State") == "ready"
                 and n["Spec"].get("Availability") != "drain"}
        for service in out:
            mine = [t for t in tasks if t["ServiceID"] == service["ID"]]
            running = sum(1 for t in mine if t["Status"]["State"] == "running" and t["DesiredState"] == "running")
            completed = sum(1 for t in mine if t["Status"]["State"] == "complete")
            kind = objects.mode_kind(service)
            if kind == "replicated-job":
                desired = int(service["Spec"]["Mode"]["ReplicatedJob"]["TotalCompletions"])
            elif kind in ("global", "global-job"):
                desired = len(ready)
            else:
                desired = objects.replicas(service) or 0
            service["ServiceStatus"] = {"RunningTasks": running, "DesiredTasks": desired, "CompletedTasks": completed}
    return out


async def list_tasks(store: Store, filters: dict[str, list[str]]) -> list[Obj]:
    tasks = await store.list("tasks")
    services = {s["ID"]: s for s in await store.list("services")}
    if "service" in filters:
        wanted = set()
        for ref in filters["service"]:
            try:
                wanted.add((await find(store, "services", ref))["ID"])
            except errors.NotFound:
                raise errors.NotFound(f"service {ref} not found") from None
        tasks = [t for t in tasks if t["ServiceID"] in wanted]
    if "node" in filters:
        nodes = set()
        for ref in filters["node"]:
            nodes.add((await find(store, "nodes", ref))["ID"] if ref != "self" else ref)
        tasks = [t for t in tasks if t["NodeID"] in nodes]
    out = []
    for task in tasks:
        if "id" in filters and not any(task["ID"].startswith(v) for v in filters["id"]):
            continue
        if "desired-state" in filters and task["DesiredState"] not in filters["desired-state"]:
            continue
        if "label" in filters and not labels_match(task.get("Labels") or {}, filters["label"]):
            continue
        if "_up-to-date" in filters:
            service = services.get(task["ServiceID"])
            if service is None or task["Spec"] != service["Spec"].get("TaskTemplate"):
                continue
        if "name" in filters:
            service = services.get(task["ServiceID"])
            name = f"{service['Spec']['Name']}.{task.get('Slot') or task['NodeID']}" if service else ""
            if not any(name.startswith(v) for v in filters["name"]):
                continue
        out.append(task)
    out.sort(key=lambda t: t["CreatedAt"])
    return out


async def get_task(store: Store, ref: str) -> Obj:
    return await find(store, "tasks", ref)
