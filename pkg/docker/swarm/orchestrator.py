"""The manager's reconcilers, run by the elected leader only (swarmkit's orchestrator, scheduler, reaper).

Leadership is an etcd key on a lease (store.campaign): the leader keeps it alive; if narwhald
dies the lease runs out and another manager (issue 18) takes over.  Each pass reads services,
tasks and nodes and writes only differences, so a pass after a crash or restart simply converges:

- replicated services: one task with desired state running per slot 1..Replicas; extra slots get
  desired state remove; a task whose spec differs from the service's template is replaced
  (pace and failure handling: updates.py; UpdateConfig.Order stop-first or start-first);
- global services: one such task per ready, active node;
- a task that ended is replaced per its RestartPolicy (condition any/on-failure/none, delay,
  max attempts within a window);
- the scheduler gives each pending task the eligible node with the fewest running tasks;
- the reaper keeps TaskHistoryRetentionLimit tasks per slot and removes the tasks of deleted
  services.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from typing import Any

from pkg import errors
from pkg.docker.swarm import objects, placement, updates
from pkg.docker.swarm.store import Store

log = logging.getLogger(__name__)

Obj = dict[str, Any]

LEASE_TTL = 10
POLL = 1.0


_dirty = updates.dirty
_ended = updates.ended


def _order(service: Obj) -> str:
    return str((service["Spec"].get("UpdateConfig") or {}).get("Order") or "stop-first")


class Orchestrator:
    def __init__(self, store: Store, node_id: str) -> None:
        self.store = store
        self.node_id = node_id
        self.leading = False
        self._wake = asyncio.Event()
        self._next: float | None = None  # earliest restart delay to wake for
        self._down: set[str] = set()  # nodes marked down (membership.py): their tasks will not report an end

    def wake(self) -> None:
        self._wake.set()

    # ---- leadership ----
    async def run(self) -> None:
        while True:
            if await self.store.leader() == self.node_id:
                # Our own key from before a restart: its lease is someone's past; take it over now.
                await self.store.c.delete(self.store._key("leader"))
            lease = await self.store.campaign(self.node_id, LEASE_TTL)
            if lease is None:
                await asyncio.sleep(2)
                continue
            log.info("swarm: %s is the leader", self.node_id)
            self.leading = True
            try:
                await self._lead(lease)
            finally:
                self.leading = False
                try:
                    await lease.revoke()
                except Exception:  # noqa: BLE001 - best effort: the lease expires anyway
                    pass

    async def _lead(self, lease: Any) -> None:
        last_refresh = time.monotonic()
        while True:
            if time.monotonic() - last_refresh > LEASE_TTL / 3:
                await lease.refresh()
                last_refresh = time.monotonic()
            try:
                await self.reconcile()
            except errors.NarwhalError as exc:
                log.warning("orchestrator: %s", exc)
            self._wake.clear()
            timeout = POLL
            if self._next is not None:
                timeout = max(0.05, min(POLL, self._next - time.time()))
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                pass

    # ---- one pass ----
    async def reconcile(self) -> None:
        self._next = None
        cluster = await self.store.get_cluster()
        if cluster is None:
            return
        limit = int(cluster["Spec"].get("Orchestration", {}).get("TaskHistoryRetentionLimit", 5) or 0)
        nodes = await self.store.list("nodes")
        self._down = {n["ID"] for n in nodes if n["Status"].get("State") == "down"}
        eligible = [n for n in nodes if n["Status"].get("State") == "ready"
                    and n["Spec"].get("Availability") == "active"]
        services = {s["ID"]: s for s in await self.store.list("services")}
        tasks = await self.store.list("tasks")
        by_service: dict[str, list[Obj]] = defaultdict(list)
        for task in tasks:
            if task["ServiceID"] not in services:
                if task["DesiredState"] != "remove":
                    await self._set_desired(task, "remove")
                continue
            by_service[task["ServiceID"]].append(task)
        eligible_ids = {n["ID"] for n in eligible}
        for service in services.values():
            mine = by_service.get(service["ID"], [])
            kind = objects.mode_kind(service)
            if kind == "replicated":
                await self._replicated(service, mine, eligible_ids)
            elif kind == "replicated-job":
                await self._replicated_job(service, mine, eligible_ids)
            else:
                constraints = placement.constraints_of(service["Spec"]["TaskTemplate"])
                nodes_for = {n["ID"] for n in eligible if placement.satisfies(n, constraints)}
                await self._global(service, mine, nodes_for, job=kind == "global-job")
            await self._supervise_update(service, mine)
            await self._reap(mine, limit)
        await self._schedule(eligible)

    async def _replicated(self, service: Obj, tasks: list[Obj], eligible: set[str]) -> None:
        wanted = objects.replicas(service) or 0
        slots: dict[int, list[Obj]] = defaultdict(list)
        for task in tasks:
            slots[int(task.get("Slot", 0))].append(task)
        budget = self._budget(service, tasks)
        for slot in range(1, wanted + 1):
            budget -= await self._converge_slot(service, slots.get(slot, []), slot, "", eligible, budget)
        for slot, slot_tasks in slots.items():
            if slot > wanted or slot < 1:
                for task in slot_tasks:
                    if task["DesiredState"] != "remove":
                        await self._set_desired(task, "remove")

    async def _replicated_job(self, service: Obj, tasks: list[Obj], eligible: set[str]) -> None:
        """TotalCompletions slots, each done once one of its tasks completed; MaxConcurrent run at a time."""
        job = service["Spec"]["Mode"]["ReplicatedJob"]
        total, concurrent = int(job["TotalCompletions"]), int(job["MaxConcurrent"])
        slots: dict[int, list[Obj]] = defaultdict(list)
        for task in tasks:
            slots[int(task.get("Slot", 0))].append(task)
        active = sum(1 for t in tasks if t["DesiredState"] == "running" and not _ended(t))
        for slot in range(1, total + 1):
            slot_tasks = slots.get(slot, [])
            if slot_tasks or active < concurrent:
                if not slot_tasks:
                    active += 1
                await self._converge_slot(service, slot_tasks, slot, "", eligible, 0, job=True)

    async def _global(self, service: Obj, tasks: list[Obj], eligible: set[str], job: bool = False) -> None:
        per_node: dict[str, list[Obj]] = defaultdict(list)
        for task in tasks:
            per_node[task["NodeID"]].append(task)
        budget = self._budget(service, tasks)
        for node_id in sorted(eligible):
            budget -= await self._converge_slot(service, per_node.get(node_id, []), 0, node_id, eligible, budget,
                                                job=job)
        for node_id, node_tasks in per_node.items():
            if node_id not in eligible:
                for task in node_tasks:
                    if task["DesiredState"] == "running":
                        await self._set_desired(task, "shutdown")

    def _budget(self, service: Obj, tasks: list[Obj]) -> int:
        allowed, wake_at = updates.budget(service, tasks)
        if wake_at is not None:
            self._next = wake_at if self._next is None else min(self._next, wake_at)
        return allowed

    async def _converge_slot(self, service: Obj, tasks: list[Obj], slot: int, node_id: str,
                             eligible: set[str], budget: int, job: bool = False) -> int:
        """Make one slot (or one node of a global service) right; returns the update budget it used."""
        if job and any(t["Status"]["State"] == "complete" for t in tasks):
            return 0  # a job's slot is done once it completed
        current = [t for t in tasks if t["DesiredState"] == "running"]
        current.sort(key=lambda t: t["CreatedAt"])
        if len(current) > 1:
            newest = current[-1]
            # start-first: the old task runs on until its replacement does
            if _order(service) != "start-first" or newest["Status"]["State"] == "running" or _ended(newest):
                for extra in current[:-1]:
                    await self._set_desired(extra, "shutdown")
        task = current[-1] if current else None
        if task is None:
            # Every task of the slot was told to stop (replaced): stop-first starts the next once they have.
            if _order(service) != "start-first" and any(not _ended(t) and t["NodeID"] not in self._down
                                                          for t in tasks):
                return 0
            await self._new_task(service, slot, node_id)
            return 0
        if task["NodeID"] and task["NodeID"] not in eligible and not node_id:
            await self._replace(service, task, slot, node_id, stop_first=True)  # its node was drained or is down
            return 0
        if _dirty(task, service):
            if budget <= 0:
                return 0
            await self._replace(service, task, slot, node_id)
            return 1
        if _ended(task):
            if self._may_restart(service, tasks, task):
                delay = int(task["Spec"].get("RestartPolicy", {}).get("Delay", 5_000_000_000) or 0) / 1e9
                due = objects.parse_time(task["Status"]["Timestamp"]) + delay
                if time.time() < due:
                    self._next = due if self._next is None else min(self._next, due)
                    return 0
                await self._replace(service, task, slot, node_id)
        return 0

    @staticmethod
    def _may_restart(service: Obj, tasks: list[Obj], task: Obj) -> bool:
        policy = task["Spec"].get("RestartPolicy") or {}
        condition = policy.get("Condition", "any")
        state = task["Status"]["State"]
        if condition == "none" or (condition == "on-failure" and state == "complete"):
            return False
        attempts = int(policy.get("MaxAttempts", 0) or 0)
        if attempts:
            window = int(policy.get("Window", 0) or 0) / 1e9
            since = time.time() - window if window else 0.0
            restarts = [t for t in tasks if t["ID"] != task["ID"]
                        and objects.parse_time(t["CreatedAt"]) >= since]
            if len(restarts) >= attempts:
                return False
        return True

    async def _replace(self, service: Obj, task: Obj, slot: int, node_id: str, stop_first: bool = False) -> None:
        """stop-first: stop it now, its successor comes once it stopped; start-first: the successor first."""
        if _order(service) == "start-first" and not _ended(task) and not stop_first:
            await self._new_task(service, slot, node_id or "")
            return
        await self._set_desired(task, "shutdown")
        if _ended(task) or task["NodeID"] in self._down:  # a down node's task is replaced at once, as swarmkit's
            await self._new_task(service, slot, node_id or "")

    async def _new_task(self, service: Obj, slot: int, node_id: str) -> None:
        task = objects.new_task(service, slot, node_id)
        await self.store.create("tasks", task)

    async def _set_desired(self, task: Obj, desired: str) -> None:
        task["DesiredState"] = desired
        task["UpdatedAt"] = objects.now()
        try:
            await self.store.update("tasks", task)
        except (errors.Internal, errors.NotFound):
            self.wake()  # changed under us (the agent reported): the next pass sees the new version

    async def _reap(self, tasks: list[Obj], limit: int) -> None:
        """Keep ``limit`` tasks per slot (the running one included); older ended ones are removed."""
        groups: dict[str, list[Obj]] = defaultdict(list)
        for task in tasks:
            if task["DesiredState"] != "remove":  # those are on their way out already
                groups[str(task.get("Slot") or task["NodeID"])].append(task)
        for group in groups.values():
            old = sorted((t for t in group if t["DesiredState"] != "running" and _ended(t)),
                         key=lambda t: t["CreatedAt"])
            keep = max(0, limit - (len(group) - len(old)))
            for task in old[:max(0, len(old) - keep)]:
                await self._set_desired(task, "remove")

    async def _supervise_update(self, service: Obj, tasks: list[Obj]) -> None:
        changed, wake_at = updates.supervise(service, tasks)
        if wake_at is not None:
            self._next = wake_at if self._next is None else min(self._next, wake_at)
        if changed:
            service["UpdatedAt"] = objects.now()
            try:
                await self.store.update("services", service)
            except (errors.Internal, errors.NotFound):
                pass
            self.wake()

    async def _schedule(self, eligible: list[Obj]) -> None:
        """Pending tasks -> among the nodes their constraints and reservations allow, the one running the
        fewest tasks."""
        tasks = await self.store.list("tasks")
        pending = [t for t in tasks if not t["NodeID"] and t["DesiredState"] == "running"]
        if not pending:
            return
        nodes = {n["ID"]: n for n in eligible}
        load = {n["ID"]: 0 for n in eligible}
        used = {n["ID"]: (0, 0) for n in eligible}
        for task in tasks:
            if task["NodeID"] in load and task["DesiredState"] == "running":
                load[task["NodeID"]] += 1
                cpus, memory = placement.reservations(task)
                used[task["NodeID"]] = (used[task["NodeID"]][0] + cpus, used[task["NodeID"]][1] + memory)
        for task in pending:
            constraints = placement.constraints_of(task["Spec"])
            candidates = [n for n in load if placement.satisfies(nodes[n], constraints)
                          and placement.fits(nodes[n], task, used[n])]
            if not candidates:
                reason = placement.no_node_reason(list(nodes.values()), task)
                if task["Status"].get("Err") != reason:
                    task["Status"] = {"Timestamp": objects.now(), "State": "pending",
                                      "Message": "pending task scheduling", "Err": reason}
                    await self._write(task)
                continue
            node_id = min(candidates, key=lambda n: (load[n], n))
            load[node_id] += 1
            cpus, memory = placement.reservations(task)
            used[node_id] = (used[node_id][0] + cpus, used[node_id][1] + memory)
            task["NodeID"] = node_id
            task["Status"] = {"Timestamp": objects.now(), "State": "assigned",
                              "Message": "scheduler assigned task to node"}
            await self._write(task)

    async def _write(self, task: Obj) -> None:
        task["UpdatedAt"] = objects.now()
        try:
            await self.store.update("tasks", task)
        except (errors.Internal, errors.NotFound):
            self.wake()
