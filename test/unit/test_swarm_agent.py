"""The swarm agent's pass against a store read that went stale while the pass was working.

A loaded machine made ``test_docker_swarm.py::test_replicated_service_lifecycle`` fail with "rollback
paused due to failure or early termination of task": a pass read a new task before its start job had
made the container, the job finished while the pass was busy with an earlier task, and the pass then
started the task a second time; the container name was taken, the task became ``rejected`` (a state
after ``running``), and the update supervisor counted it as a failed task.  Here the interleaving is made
certain with fakes at the agent's two seams (the store and the executor).
"""
from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any, cast

from pkg import errors
from pkg.docker.swarm import objects
from pkg.docker.swarm.agent import Agent
from pkg.docker.swarm.executor import Executor, Observed
from pkg.docker.swarm.store import Store

Obj = dict[str, Any]


class FakeStore:
    """The calls the agent makes, on dicts; ``list`` answers copies, as etcd answers a revision."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Obj]] = {"tasks": {}, "services": {}, "networks": {}}

    async def list(self, kind: str) -> list[Obj]:
        return [copy.deepcopy(o) for _, o in sorted(self.objects[kind].items())]

    async def get(self, kind: str, obj_id: str) -> Obj | None:
        obj = self.objects[kind].get(obj_id)
        return copy.deepcopy(obj) if obj is not None else None

    async def update(self, kind: str, obj: Obj) -> Obj:
        self.objects[kind][obj["ID"]] = copy.deepcopy(obj)
        return obj

    async def delete(self, kind: str, obj_id: str) -> bool:
        return self.objects[kind].pop(obj_id, None) is not None


class FakeExecutor:
    """Containers by name; a second create of one name conflicts, as the engine's does."""

    def __init__(self) -> None:
        self.by_task: dict[str, str] = {}
        self.running: set[str] = set()
        self.creates = 0
        self.prepare_gate = asyncio.Event()
        self.prepare_gate.set()
        self.on_remove: Any = None

    def containers(self) -> dict[str, str]:
        return dict(self.by_task)

    def observe(self, container_id: str) -> Observed | None:
        if container_id not in self.by_task.values():
            return None
        up = container_id in self.running
        return Observed(container_id=container_id, running=up, exited=not up, exit_code=0, pid=42 if up else 0)

    async def prepare(self, image: str) -> None:
        await self.prepare_gate.wait()

    async def create(self, name: str, task: Obj, service: Obj, node_id: str, mounts: list[Any],
                     ingress: str = "") -> str:
        self.creates += 1
        container_id = f"c-{name}"
        if container_id in self.by_task.values():
            raise errors.AlreadyExists(f'Conflict. The container name "/{name}" is already in use')
        self.by_task[task["ID"]] = container_id
        return container_id

    async def start(self, container_id: str) -> None:
        self.running.add(container_id)

    async def addresses(self, container_id: str) -> dict[str, str]:
        return {}

    async def remove(self, container_id: str) -> None:
        if self.on_remove is not None:
            await self.on_remove()
        self.by_task = {t: c for t, c in self.by_task.items() if c != container_id}
        self.running.discard(container_id)


def _task(task_id: str, service: Obj, desired: str = "running") -> Obj:
    task = objects.new_task(service, 1, "node1")
    task["ID"] = task_id
    task["DesiredState"] = desired
    return task


async def test_a_task_whose_job_ended_during_the_pass_is_not_started_twice(tmp_path: Path) -> None:
    store, executor = FakeStore(), FakeExecutor()
    service = {"ID": "svc", "Version": {"Index": 1},
               "Spec": {"Name": "web", "TaskTemplate": {"ContainerSpec": {"Image": "busybox"}}}}
    store.objects["services"]["svc"] = service
    agent = Agent(cast(Store, store), "node1", cast(Executor, executor), tmp_path)  # the agent's two seams

    # pass 1 starts task B's job, which waits in prepare (an image pull, a loaded machine)
    executor.prepare_gate.clear()
    store.objects["tasks"]["b"] = _task("b", service)
    await agent.reconcile()
    job = agent._jobs["b"]

    # pass 2 reads B before its container exists; task A (removed, listed first) keeps the pass busy
    # while B's job creates, starts and reports its container, and ends
    old = _task("a", service, desired="remove")
    store.objects["tasks"]["a"] = old
    executor.by_task["a"] = "c-old"

    async def finish_b_meanwhile() -> None:
        executor.on_remove = None
        executor.prepare_gate.set()
        await job

    executor.on_remove = finish_b_meanwhile
    await agent.reconcile()
    await asyncio.gather(*agent._jobs.values())

    assert executor.creates == 1  # without the fix: a second start, refused by the name conflict
    assert store.objects["tasks"]["b"]["Status"]["State"] == "running"
    assert "a" not in store.objects["tasks"]

    await agent.reconcile()  # the next pass reads B afresh: running, nothing to do
    assert executor.creates == 1 and not agent._jobs
    assert store.objects["tasks"]["b"]["Status"]["State"] == "running"
