"""The periodic reconcile and the exit handler serialise on the container's lock: a reconcile that
races an exit being handled never overwrites the recorded exit code with 255 ("task gone").  And a removal
after an exit handled here makes no Tasks.Kill/Delete round trips (the task is gone), unlike one after a
restart, which cannot know."""
from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import pytest

from pkg.containerd import tasks as ctr_tasks
from pkg.model.container import ContainerStatus
from pkg.model.state import ContainerState
from pkg.runtime import container_io, container_release
from pkg.runtime.containers import ContainerService
from pkg.runtime.process_specs import ProcessSpecs
from pkg.store import Store

CID = "c" * 64


class FakeEvents:
    def __init__(self) -> None:
        self.published: list[tuple[str, int]] = []

    def publish(self, container_id: str, sandbox_id: str, kind: object, metadata: object, code: int = 0,
                ran_for_s: int | None = None) -> None:
        self.published.append((container_id, code))

    def oom_killed(self, *args: object) -> None:
        pass


class FakeStdin:
    def close(self, container_id: str) -> None:
        pass


class FakeTasks:
    """containerd's view of one task that has exited 0: Get sees it until Delete (which we hold open) ran."""

    def __init__(self) -> None:
        self.deleting = asyncio.Event()
        self.release = asyncio.Event()
        self.deleted = False

    async def get(self, client: object, container_id: str) -> ctr_tasks.TaskInfo | None:
        if self.deleted or self.deleting.is_set():
            return None
        return ctr_tasks.TaskInfo(container_id, 0, ctr_tasks.TaskStatus.STOPPED, 0, 0)

    async def delete(self, client: object, container_id: str) -> None:
        self.deleting.set()
        await self.release.wait()
        self.deleted = True


@pytest.fixture
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[ContainerService, FakeTasks, FakeEvents]:
    fake = FakeTasks()
    monkeypatch.setattr(ctr_tasks, "get", fake.get)
    monkeypatch.setattr(ctr_tasks, "delete", fake.delete)
    monkeypatch.setattr(container_io, "oom_killed", lambda metadata: False)
    containers: Store[object, ContainerStatus] = Store("container")
    containers.add(CID, SimpleNamespace(id=CID, sandbox_id="s" * 64, cgroups_path="", log_path="", unique_name="c",
                                                 config=SimpleNamespace(stdin=False, tty=False)),
                   ContainerStatus(ContainerState.RUNNING, pid=42))
    events = FakeEvents()
    ctx = SimpleNamespace(containers=containers, events=events, stdin=FakeStdin(), client=object(),
                          process_specs=ProcessSpecs(),
                          container_root=lambda cid: tmp_path / cid, container_state=lambda cid: tmp_path / "s" / cid,
                          domain="cri", log_service=None)
    return ContainerService(ctx), fake, events  # type: ignore[arg-type]


async def test_reconcile_during_exit_handling_keeps_the_exit_code(
    service: tuple[ContainerService, FakeTasks, FakeEvents],
) -> None:
    svc, fake, events = service
    exiting = asyncio.create_task(svc.handle_exit(CID, 0, 1_000))
    await fake.deleting.wait()  # the exit handler holds the lock and is deleting the task
    reconciling = asyncio.create_task(svc.reconcile(CID))
    await asyncio.sleep(0)  # let reconcile run as far as it can
    fake.release.set()
    await asyncio.gather(exiting, reconciling)
    _, status = svc.ctx.containers.get(CID)
    assert (status.state, status.exit_code, status.reason) == (ContainerState.EXITED, 0, "Completed")
    assert events.published == [(CID, 0)]  # one exit, reported once


async def test_reconcile_of_a_stopped_task_records_its_exit(
    service: tuple[ContainerService, FakeTasks, FakeEvents],
) -> None:
    svc, fake, _ = service
    fake.release.set()
    await svc.reconcile(CID)
    _, status = svc.ctx.containers.get(CID)
    assert (status.state, status.exit_code) == (ContainerState.EXITED, 0)
    assert fake.deleted


@pytest.mark.parametrize("handled_here", [True, False])
async def test_a_removal_skips_the_task_round_trips_only_after_an_exit_handled_here(
    service: tuple[ContainerService, FakeTasks, FakeEvents], monkeypatch: pytest.MonkeyPatch, handled_here: bool,
) -> None:
    svc, fake, _ = service
    fake.release.set()
    if handled_here:
        await svc.handle_exit(CID, 0, 1_000)
    else:  # as recovered after a restart: exited, but nothing here saw its task go
        await svc.ctx.containers.update(CID, lambda s: ContainerStatus(ContainerState.EXITED))
    released: list[bool] = []

    async def release(ctx: object, metadata: object, container_id: str = "", task_gone: bool = False) -> None:
        released.append(task_gone)

    monkeypatch.setattr(container_release, "release_resources", release)
    await svc.remove(CID)
    assert released == [handled_here] and svc.ctx.containers.find(CID) is None
