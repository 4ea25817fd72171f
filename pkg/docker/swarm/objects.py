"""Building moby's swarm objects (api/types/swarm) as the JSON records the store keeps.

The store's records *are* moby's JSON shapes (Cluster, Node, Service, Task, Secret, Config), so
the Docker handlers pass them through and a future node reads the same records; ``Version`` is
added on read from the etcd revision.  IDs, tokens and times follow swarmkit's forms.
"""
from __future__ import annotations

import copy
import datetime
import hashlib
import platform
import secrets
import socket
from typing import Any

Obj = dict[str, Any]

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


def _base36(value: int, width: int) -> str:
    out = ""
    while value:
        value, rem = divmod(value, 36)
        out = _ALPHABET[rem] + out
    return out.rjust(width, "0")[-width:]


def new_id() -> str:
    """swarmkit's identity.NewID: 128 random bits in base 36, 25 characters."""
    return _base36(int.from_bytes(secrets.token_bytes(16), "big"), 25)


def now() -> str:
    """RFC 3339 with nanoseconds in UTC, as Go marshals time.Time."""
    t = datetime.datetime.now(datetime.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond:06d}000Z"


def parse_time(value: str) -> float:
    """Seconds since the epoch of a time written by ``now``."""
    text = value.rstrip("Z")
    base, _, frac = text.partition(".")
    t = datetime.datetime.strptime(base, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.UTC)
    return t.timestamp() + (float("0." + frac) if frac else 0.0)


# ---- tokens ----
def join_token(ca_digest: str) -> str:
    """swarmkit's shape: SWMTKN-1-<root CA digest, base 36, 50 chars>-<secret, base 36, 25 chars>."""
    return f"SWMTKN-1-{ca_digest}-{_base36(int.from_bytes(secrets.token_bytes(16), 'big'), 25)}"


def ca_digest(material: bytes) -> str:
    return _base36(int.from_bytes(hashlib.sha256(material).digest(), "big"), 50)


# ---- cluster ----
def default_cluster_spec() -> Obj:
    return {
        "Name": "default",
        "Labels": {},
        "Orchestration": {"TaskHistoryRetentionLimit": 5},
        "Raft": {"SnapshotInterval": 10000, "KeepOldSnapshots": 0, "LogEntriesForSlowFollowers": 500,
                 "ElectionTick": 10, "HeartbeatTick": 1},
        "Dispatcher": {"HeartbeatPeriod": 5_000_000_000},
        "CAConfig": {"NodeCertExpiry": 7_776_000_000_000_000},
        "TaskDefaults": {},
        "EncryptionConfig": {"AutoLockManagers": False},
    }


def merge_spec(base: Obj, given: Obj | None) -> Obj:
    """``given`` over ``base``, one level of sections deep (moby fills a zero section with defaults)."""
    spec = copy.deepcopy(base)
    for key, value in (given or {}).items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict) and key not in ("Labels",):
            section = dict(spec[key])
            # A zero left by the client keeps the default, as swarmkit's defaults fill zero values.
            section.update({k: v for k, v in value.items() if v not in (None, 0, "") or k not in section})
            spec[key] = section
        elif value is not None:
            spec[key] = value
    return spec


def new_cluster(spec: Obj, ca_material: bytes, *, default_addr_pool: list[str], subnet_size: int,
                data_path_port: int) -> Obj:
    digest = ca_digest(ca_material)
    stamp = now()
    return {
        "ID": new_id(),
        "CreatedAt": stamp,
        "UpdatedAt": stamp,
        "Spec": spec,
        "TLSInfo": {"TrustRoot": "", "CertIssuerSubject": "", "CertIssuerPublicKey": ""},
        "RootRotationInProgress": False,
        "DefaultAddrPool": default_addr_pool,
        "SubnetSize": subnet_size,
        "DataPathPort": data_path_port,
        "JoinTokens": {"Worker": join_token(digest), "Manager": join_token(digest)},
        "CADigest": digest,
    }


PRIVATE_CLUSTER_KEYS = ("CADigest", "UnlockKey", "DEK")


# ---- nodes ----
def new_node(node_id: str, role: str, availability: str, addr: str, resources: Obj, engine_version: str) -> Obj:
    """``addr`` is host:port (the manager address); Status.Addr is its host."""
    stamp = now()
    node: Obj = {
        "ID": node_id,
        "CreatedAt": stamp,
        "UpdatedAt": stamp,
        "Spec": {"Labels": {}, "Role": role, "Availability": availability},
        "Description": {
            "Hostname": socket.gethostname(),
            "Platform": {"Architecture": platform.machine(), "OS": "linux"},
            "Resources": resources,
            "Engine": {"EngineVersion": engine_version, "Plugins": [
                {"Type": "Log", "Name": "json-file"}, {"Type": "Network", "Name": "bridge"},
                {"Type": "Network", "Name": "host"}, {"Type": "Network", "Name": "null"},
                {"Type": "Volume", "Name": "local"}]},
            "TLSInfo": {"TrustRoot": "", "CertIssuerSubject": "", "CertIssuerPublicKey": ""},
        },
        "Status": {"State": "ready", "Addr": addr.rpartition(":")[0].strip("[]")},
    }
    if role == "manager":
        node["ManagerStatus"] = {"Leader": True, "Reachability": "reachable", "Addr": addr}
    return node


# ---- services ----
def service_defaults(spec: Obj) -> Obj:
    """moby's insertDefaults: what swarmkit fills in a spec the client left empty."""
    spec = copy.deepcopy(spec)
    spec.setdefault("Labels", {})
    template = spec.setdefault("TaskTemplate", {})
    template.setdefault("ContainerSpec", {})
    template["ContainerSpec"].setdefault("StopGracePeriod", 10_000_000_000)
    template["ContainerSpec"].setdefault("DNSConfig", {})
    template["ContainerSpec"].setdefault("Isolation", "default")
    template.setdefault("Resources", {"Limits": {}, "Reservations": {}})
    restart = template.setdefault("RestartPolicy", {})
    restart.setdefault("Condition", "any")
    restart.setdefault("Delay", 5_000_000_000)
    restart.setdefault("MaxAttempts", 0)
    template.setdefault("Placement", {})
    template.setdefault("ForceUpdate", 0)
    template.setdefault("Runtime", "container")
    mode = spec.setdefault("Mode", {"Replicated": {"Replicas": 1}})
    if "Replicated" in mode:
        mode["Replicated"].setdefault("Replicas", 1)
    for key in ("UpdateConfig", "RollbackConfig"):
        cfg = spec.setdefault(key, {})
        cfg.setdefault("Parallelism", 1)
        cfg.setdefault("FailureAction", "pause")
        cfg.setdefault("Monitor", 5_000_000_000)
        cfg.setdefault("MaxFailureRatio", 0)
        cfg.setdefault("Order", "stop-first")
    spec.setdefault("EndpointSpec", {"Mode": "vip"})
    return spec


def mode_kind(service: Obj) -> str:
    """replicated, global, replicated-job or global-job."""
    mode = service["Spec"].get("Mode", {})
    for key, kind in (("ReplicatedJob", "replicated-job"), ("GlobalJob", "global-job"), ("Global", "global")):
        if key in mode:
            return kind
    return "replicated"


def replicas(service: Obj) -> int | None:
    """Desired replicas of a replicated service; None for any other mode."""
    mode = service["Spec"].get("Mode", {})
    if "Replicated" not in mode:
        return None
    return int(mode.get("Replicated", {}).get("Replicas", 1) or 0)


# ---- tasks ----
TERMINAL = ("complete", "shutdown", "failed", "rejected", "orphaned", "remove")
STATE_ORDER = ("new", "pending", "assigned", "accepted", "preparing", "ready", "starting", "running",
               *TERMINAL)


def state_index(state: str) -> int:
    return STATE_ORDER.index(state) if state in STATE_ORDER else 0


def new_task(service: Obj, slot: int, node_id: str) -> Obj:
    stamp = now()
    spec = copy.deepcopy(service["Spec"]["TaskTemplate"])
    task: Obj = {
        "ID": new_id(),
        "CreatedAt": stamp,
        "UpdatedAt": stamp,
        "Labels": {},
        "Spec": spec,
        "ServiceID": service["ID"],
        "NodeID": node_id,
        "Status": {"Timestamp": stamp, "State": "assigned" if node_id else "pending",
                   "Message": "scheduler assigned task to node" if node_id else "pending task scheduling"},
        "DesiredState": "running",
        "ServiceVersion": service["Version"]["Index"],
        "SpecVersion": dict(service.get("SpecVersion", {})),
    }
    if slot:
        task["Slot"] = slot
    return task


def task_name(service_name: str, task: Obj) -> str:
    """The container name: <service>.<slot or node ID>.<task ID> (swarmkit's naming.Task)."""
    return f"{service_name}.{task.get('Slot') or task['NodeID']}.{task['ID']}"
