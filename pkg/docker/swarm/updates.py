"""The update supervisor (swarmkit's updater): how fast a spec change rolls out and what a failing
new task does to it.

- ``budget``: how many slots may start a replacement now — UpdateConfig.Parallelism (0 = all) minus
  the replacements in flight; none while the update is paused or within Delay of the last new task
  starting to run;
- ``supervise``: during an update (or rollback), a new task that fails within Monitor of starting
  counts as a failure; past MaxFailureRatio the FailureAction applies — pause (UpdateStatus paused),
  rollback (the previous spec comes back, rollback_started) or continue; the update completes once
  every wanted task runs the new spec and no old task is still stopping.
"""
from __future__ import annotations

import time
from typing import Any

from pkg.docker.swarm import objects

Obj = dict[str, Any]

UNLIMITED = 1 << 30


def dirty(task: Obj, service: Obj) -> bool:
    """The task runs another spec than the service's current one."""
    return bool(task["Spec"] != service["Spec"].get("TaskTemplate"))


def ended(task: Obj) -> bool:
    return task["Status"]["State"] in objects.TERMINAL


def _config(service: Obj) -> Obj:
    status = (service.get("UpdateStatus") or {}).get("State", "")
    key = "RollbackConfig" if status.startswith("rollback") else "UpdateConfig"
    return service["Spec"].get(key) or {}


def budget(service: Obj, tasks: list[Obj]) -> tuple[int, float | None]:
    """Replacements allowed now, and when to look again if a Delay holds them back."""
    if (service.get("UpdateStatus") or {}).get("State") == "paused":
        return 0, None
    config = _config(service)
    parallelism = int(config.get("Parallelism", 1) or 0)
    in_flight = sum(1 for t in tasks if not ended(t) and (
        (t["DesiredState"] == "running" and t["Status"]["State"] != "running" and not dirty(t, service))
        or t["DesiredState"] == "shutdown"))
    allowed = UNLIMITED if parallelism == 0 else max(0, parallelism - in_flight)
    delay = int(config.get("Delay", 0) or 0) / 1e9
    if delay and allowed and any(dirty(t, service) for t in tasks if t["DesiredState"] == "running"):
        started = [objects.parse_time(t["Status"]["Timestamp"]) for t in tasks
                   if t["DesiredState"] == "running" and not dirty(t, service) and t["Status"]["State"] == "running"]
        if started and time.time() < max(started) + delay:
            return 0, max(started) + delay
    return allowed, None


def supervise(service: Obj, tasks: list[Obj]) -> tuple[bool, float | None]:
    """Advance the service's UpdateStatus (in place): whether to write the service back, and when to look
    again (the new tasks must have run for Monitor before the update counts as complete)."""
    status = service.get("UpdateStatus") or {}
    state = status.get("State")
    if state not in ("updating", "rollback_started"):
        return False, None
    failed = _failures(service, tasks, status)
    config = _config(service)
    total = max(1, sum(1 for t in tasks if t["DesiredState"] == "running"))
    ratio = float(config.get("MaxFailureRatio", 0) or 0)
    if failed and len(failed) / total > ratio:
        action = config.get("FailureAction") or "pause"
        why = f"due to failure or early termination of task {failed[0]['ID']}"
        if action == "pause":
            service["UpdateStatus"] = {**status, "State": "paused" if state == "updating" else "rollback_paused",
                                       "Message": f"{'update' if state == 'updating' else 'rollback'} paused {why}"}
            return True, None
        if action == "rollback" and state == "updating" and service.get("PreviousSpec"):
            service["Spec"], service["PreviousSpec"] = service["PreviousSpec"], service["Spec"]
            service["UpdateStatus"] = {"State": "rollback_started", "StartedAt": objects.now(),
                                       "Message": f"update rolled back {why}"}
            return True, None
    wanted = [t for t in tasks if t["DesiredState"] == "running"]
    if any(dirty(t, service) or t["Status"]["State"] not in ("running", "complete") for t in wanted):
        return False, None
    if any(t["DesiredState"] == "shutdown" and not ended(t) for t in tasks):
        return False, None  # an old task is still stopping (stop-first: its successor is not there yet)
    count = objects.replicas(service)
    if count is not None and len(wanted) < count:
        return False, None
    monitor = int(config.get("Monitor", 5_000_000_000) or 0) / 1e9
    stable_at = max((objects.parse_time(t["Status"]["Timestamp"]) + monitor for t in wanted
                     if t["Status"]["State"] == "running"), default=0.0)
    if time.time() < stable_at:
        return False, stable_at
    rollback = state == "rollback_started"
    service["UpdateStatus"] = {**status, "State": "rollback_completed" if rollback else "completed",
                               "CompletedAt": objects.now(),
                               "Message": "rollback completed" if rollback else "update completed"}
    return True, None


def _failures(service: Obj, tasks: list[Obj], status: Obj) -> list[Obj]:
    """New-spec tasks of this update that failed within Monitor of their creation."""
    since = objects.parse_time(status["StartedAt"]) if status.get("StartedAt") else 0.0
    monitor = int(_config(service).get("Monitor", 5_000_000_000) or 5_000_000_000) / 1e9
    out = []
    for task in tasks:
        if dirty(task, service) or task["Status"]["State"] not in ("failed", "rejected"):
            continue
        created = objects.parse_time(task["CreatedAt"])
        if created >= since and objects.parse_time(task["Status"]["Timestamp"]) - created <= monitor + 30:
            out.append(task)
    return sorted(out, key=lambda t: t["CreatedAt"])
