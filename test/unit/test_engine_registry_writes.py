"""Engine registry: concurrent updates of one record (a restart timer and a remove) lose nothing."""
from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

from pkg.docker.engine.model import ContainerSpec, EngineRecord, HostConfig
from pkg.docker.engine.records import RecordStore
from pkg.docker.engine.registry import Registry
from pkg.model.state import ContainerState, DockerState

CID = "c" * 64


class SlowStore(RecordStore):
    """Writes that take a while (as the thread doing fsync does), so updates overlap."""

    async def write(self, record: EngineRecord) -> None:
        await asyncio.sleep(0.01)
        await super().write(record)


async def test_concurrent_updates_are_serialised(tmp_path: Path) -> None:
    registry = Registry(SlowStore(tmp_path), lambda _id: ContainerState.EXITED)
    registry.add(EngineRecord(id=CID, name="web", sandbox_id="s" * 64, owns_sandbox=True, image_id="sha256:" + "b" * 64,
                              created=1, config=ContainerSpec(image="busybox"), host_config=HostConfig()))
    await asyncio.gather(
        registry.transition(CID, DockerState.RESTARTING),
        registry.update_state(CID, restart_count=3),
        registry.update(CID, lambda r: dataclasses.replace(r, log_path="/x")),
    )
    current = registry.get(CID)
    assert (current.state.restarting, current.state.restart_count, current.log_path) == (True, 3, "/x")
    (on_disk,), broken = await RecordStore(tmp_path).load_all()
    assert broken == [] and on_disk == current
    assert sorted(p.name for p in (tmp_path / CID).iterdir()) == ["record.json"]  # no temp file left


class CountingStore(RecordStore):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.writes = 0

    async def write(self, record: EngineRecord) -> None:
        self.writes += 1
        await super().write(record)


async def test_an_update_that_changes_nothing_writes_nothing(tmp_path: Path) -> None:
    """A first start's "not manually stopped" changes nothing: no fsync'd write on the start path (issue 21)."""
    store = CountingStore(tmp_path)
    registry = Registry(store, lambda _id: ContainerState.CREATED)
    record = EngineRecord(id=CID, name="web", sandbox_id="s" * 64, owns_sandbox=True, image_id="sha256:" + "b" * 64,
                          created=1, config=ContainerSpec(image="busybox"), host_config=HostConfig())
    registry.add(record)
    assert await registry.transition(CID, None, manually_stopped=False) is record
    assert await registry.update(CID, lambda r: dataclasses.replace(r)) is record
    assert store.writes == 0 and not (tmp_path / CID).exists()
    changed = await registry.update_state(CID, started_once=True)
    assert store.writes == 1 and changed.state.started_once and registry.get(CID) is changed
