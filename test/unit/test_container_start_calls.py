"""StartContainer with the log service (issue 21): the fifos' registration with the service is on its way while
Tasks.Create runs (one round trip less in sequence), but the task is never started before the service has the
fifos; a registration that fails fails the start (the task is deleted), and narwhald's ends of the fifos are closed
whatever happened, only once the registration settled."""
from __future__ import annotations

import asyncio
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pkg import errors
from pkg.containerd import snapshots as ctr_snapshots
from pkg.containerd import tasks as ctr_tasks
from pkg.logs.service import StreamSpec
from pkg.model.container import ContainerConfig, ContainerMetadata, ContainerStatus
from pkg.model.sandbox import SandboxState
from pkg.model.state import ContainerState
from pkg.runtime.containers import ContainerService
from pkg.runtime.process_specs import ProcessSpecs
from pkg.runtime.stdin import StdinKeeper
from pkg.store import Store

CID, SID = "c" * 64, "s" * 64


class LogService:
    """``add`` held open until ``release``; what it was told, in order with the tasks' calls."""

    def __init__(self, calls: list[str], error: Exception | None = None) -> None:
        self.calls, self.error = calls, error
        self.release = asyncio.Event()

    async def add(self, key: str, spec: StreamSpec) -> None:
        self.calls.append("add")
        await self.release.wait()
        if self.error is not None:
            self.calls.append("add failed")
            raise self.error
        self.calls.append("added")

    async def wait_done(self, key: str, timeout: float) -> bool:
        self.calls.append("wait done")
        return True


class Events:
    def publish(self, *args: object, **kwargs: object) -> None:
        pass


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, calls: list[str],
            log_service: LogService) -> ContainerService:
    async def create(client: object, container_id: str, rootfs: object, **kwargs: Any) -> int:
        calls.append("create task")
        return 42

    async def start(client: object, container_id: str, exec_id: str = "") -> int:
        calls.append("start task")
        return 42

    async def kill(client: object, container_id: str, *args: object, **kwargs: object) -> None:
        calls.append("kill task")

    async def delete(client: object, container_id: str) -> None:
        calls.append("delete task")

    for name, fn in (("create", create), ("start", start), ("kill", kill), ("delete", delete)):
        monkeypatch.setattr(ctr_tasks, name, fn)
    containers: Store[ContainerMetadata, ContainerStatus] = Store("container")
    metadata = ContainerMetadata(id=CID, sandbox_id=SID, config=ContainerConfig(name="c", image="img"), image_id="i",
                                 image_ref="img", created_at=1, log_path=str(tmp_path / "c.log"))
    containers.add(CID, metadata, ContainerStatus(ContainerState.CREATED))
    sandboxes: Store[Any, Any] = Store("sandbox")
    sandboxes.add(SID, SimpleNamespace(id=SID), SimpleNamespace(state=SandboxState.READY))
    ctx = SimpleNamespace(containers=containers, sandboxes=sandboxes, log_service=log_service, domain="",
                          client=object(), events=Events(), stdin=StdinKeeper(), process_specs=ProcessSpecs(),
                          container_root=lambda cid: tmp_path / "root" / cid,
                          container_state=lambda cid: tmp_path / "state" / cid)
    svc = ContainerService(ctx)  # type: ignore[arg-type]
    svc._rootfs[CID] = [ctr_snapshots.Mount(type="overlay", source="overlay")]
    return svc


async def test_the_task_is_created_during_the_registration_and_started_after_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    logs = LogService(calls)
    svc = service(tmp_path, monkeypatch, calls, logs)
    fds = open_fds()
    starting = asyncio.create_task(svc.start(CID))
    for _ in range(50):
        if "create task" in calls:
            break
        await asyncio.sleep(0.01)
    assert sorted(calls) == ["add", "create task"]  # before: add, added, create task — a round trip more in sequence
    assert not starting.done()  # no start before the service has the fifos
    logs.release.set()
    await starting
    assert sorted(calls[:2]) == ["add", "create task"] and calls[2:] == ["added", "start task"]
    assert svc.get(CID)[1].state == ContainerState.RUNNING
    assert open_fds() == fds  # narwhald's ends of the fifos are closed


async def test_a_failed_registration_fails_the_start_and_deletes_the_task(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    logs = LogService(calls, errors.Internal("the log service refused it"))
    logs.release.set()
    svc = service(tmp_path, monkeypatch, calls, logs)
    fds = open_fds()
    with pytest.raises(errors.Internal):
        await svc.start(CID)
    assert "start task" not in calls and calls[-3:] == ["kill task", "delete task", "wait done"]
    _, status = svc.get(CID)
    assert (status.state, status.reason) == (ContainerState.EXITED, "StartError")
    assert open_fds() == fds


async def test_a_failed_create_closes_the_fifos_once_the_registration_settled(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    logs = LogService(calls)
    svc = service(tmp_path, monkeypatch, calls, logs)

    async def failing_create(client: object, container_id: str, rootfs: object, **kwargs: Any) -> int:
        calls.append("create task")
        raise errors.Internal("runc create failed")

    monkeypatch.setattr(ctr_tasks, "create", failing_create)
    fds = open_fds()
    starting = asyncio.create_task(svc.start(CID))
    for _ in range(50):
        if "create task" in calls:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    assert not starting.done() and open_fds() > fds  # our ends stay open while the service is being told
    logs.release.set()
    with pytest.raises(errors.Internal, match="runc create failed"):
        await starting
    assert open_fds() == fds and "start task" not in calls and calls[-1] == "wait done"  # nothing left behind
