"""The one transition table (pkg.model.state): every legal edge works, every other one raises; the store's
update is serialised; the Docker-only part of a container's state moves only along the table."""
from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest

from pkg.docker.engine.model import ContainerSpec, EngineRecord, EngineState, HostConfig
from pkg.docker.engine.records import RecordStore, upgrade
from pkg.docker.engine.registry import Registry
from pkg.model.container import ContainerStatus
from pkg.model.sandbox import SandboxStatus
from pkg.model.state import (
    DOCKER_ONLY,
    TRANSITIONS,
    ContainerState,
    DockerState,
    IllegalTransition,
    SandboxState,
    docker_extra,
    docker_state,
    transition,
)
from pkg.store import Store

CID = "c" * 64


def test_the_table_covers_every_state() -> None:
    for kind in (ContainerState, SandboxState, DockerState):
        for state in kind:
            assert state in TRANSITIONS
            assert all(type(to) is kind for to in TRANSITIONS[state])


@pytest.mark.parametrize(("current", "to"), [*itertools.product(ContainerState, ContainerState)])
def test_every_container_edge(current: ContainerState, to: ContainerState) -> None:
    status = ContainerStatus(current, pid=7, exit_code=1)
    if to == current or to in TRANSITIONS[current]:
        new = transition(status, to, "test", exit_code=2)
        assert (new.state, new.pid, new.exit_code) == (to, 7, 2)
    else:
        with pytest.raises(IllegalTransition, match=f"container is {current.value}, cannot become {to.value}"):
            transition(status, to, "test")


@pytest.mark.parametrize(("current", "to"), [*itertools.product(SandboxState, SandboxState)])
def test_every_sandbox_edge(current: SandboxState, to: SandboxState) -> None:
    status = SandboxStatus(current, ip="10.0.0.2")
    if to == current or to in TRANSITIONS[current]:
        assert transition(status, to, "test", infra_pid=3) == SandboxStatus(to, ip="10.0.0.2", infra_pid=3)
    else:
        with pytest.raises(IllegalTransition, match=f"sandbox is {current.value}, cannot become {to.value}"):
            transition(status, to, "test")


def test_a_state_of_another_machine_is_refused() -> None:
    with pytest.raises(IllegalTransition):
        transition(ContainerStatus(ContainerState.CREATED), SandboxState.READY, "test")


def _docker_combinations(state: DockerState) -> list[tuple[ContainerState, DockerState | None]]:
    """Every (core state, Docker-only part) that shows as ``state``."""
    return [(core, extra) for core in ContainerState for extra in (None, *DOCKER_ONLY)
            if docker_state(core, extra) == state]


@pytest.mark.parametrize(("current", "to"), [*itertools.product(DockerState, DockerState)])
def test_every_docker_edge(current: DockerState, to: DockerState) -> None:
    combinations = _docker_combinations(current)
    assert combinations, f"{current} cannot be shown"
    if to == current or to in TRANSITIONS[current]:
        # Some core state lets the edge be taken, and taking it shows the state it names.
        worked = []
        for core, extra in combinations:
            try:
                new = docker_extra(core, extra, to, "test")
            except IllegalTransition:
                continue
            assert docker_state(core, new) == to
            worked.append(core)
        assert worked, f"{current.value} -> {to.value} is in the table but no core state allows it"
    else:
        for core, extra in combinations:
            with pytest.raises(IllegalTransition):
                docker_extra(core, extra, to, "test")


def test_docker_moves_agree_with_the_core() -> None:
    with pytest.raises(IllegalTransition, match="restarting, cannot become paused"):
        docker_extra(ContainerState.EXITED, DockerState.RESTARTING, DockerState.PAUSED, "test")
    # In the table, but not what the core says: a restarting container whose task is lost is dead, not exited.
    with pytest.raises(IllegalTransition, match="task is unknown, it cannot be exited"):
        docker_extra(ContainerState.UNKNOWN, DockerState.RESTARTING, DockerState.EXITED, "test")
    # An exit ends a pause: settling on what the core says drops it; a removal is never dropped.
    assert docker_extra(ContainerState.EXITED, DockerState.PAUSED, None, "test") is None
    assert docker_extra(ContainerState.EXITED, DockerState.REMOVING, None, "test") == DockerState.REMOVING


async def test_store_update_is_serialised() -> None:
    store: Store[str, ContainerStatus] = Store("container")
    store.add(CID, "meta", ContainerStatus(ContainerState.CREATED))
    seen: list[ContainerState] = []

    async def slow_persist(new: ContainerStatus) -> None:
        await asyncio.sleep(0.01)

    def to(state: ContainerState) -> object:
        def fn(old: ContainerStatus) -> ContainerStatus:
            seen.append(old.state)
            return transition(old, state, "test")
        return fn

    # Unserialised, the second function saw CREATED too and its EXITED-from-CREATED overwrote the start.
    await asyncio.gather(store.update(CID, to(ContainerState.RUNNING), slow_persist),  # type: ignore[arg-type]
                         store.update(CID, to(ContainerState.EXITED), slow_persist))  # type: ignore[arg-type]
    assert seen == [ContainerState.CREATED, ContainerState.RUNNING]
    assert store.get(CID)[1].state == ContainerState.EXITED


async def test_registry_transition_under_the_record_lock(tmp_path: Path) -> None:
    core = {CID: ContainerState.RUNNING}
    registry = Registry(RecordStore(tmp_path), lambda cid: core[cid])
    registry.add(EngineRecord(id=CID, name="web", sandbox_id="s" * 64, owns_sandbox=True, image_id="sha256:x",
                              created=1, config=ContainerSpec(image="busybox"), host_config=HostConfig()))
    await registry.transition(CID, DockerState.PAUSED)
    with pytest.raises(IllegalTransition):
        await registry.transition(CID, DockerState.RESTARTING)
    assert registry.get(CID).state.paused  # the refused move changed nothing
    core[CID] = ContainerState.EXITED
    await registry.transition(CID, None, restart_count=1)
    await registry.transition(CID, DockerState.RESTARTING)
    await registry.update_state(CID, manually_stopped=True)  # facts only: stays restarting
    state = registry.get(CID).state
    assert (state.restarting, state.restart_count, state.manually_stopped) == (True, 1, True)
    with pytest.raises(TypeError):
        await registry.update_state(CID, extra=None)
    (on_disk,), _ = await RecordStore(tmp_path).load_all()
    assert on_disk.state == state


@pytest.mark.parametrize(("flags", "extra"), [
    ({"phase": "created"}, None),
    ({"phase": "removing", "paused": True}, DockerState.REMOVING),
    ({"phase": "created", "restarting": True}, DockerState.RESTARTING),
    ({"phase": "created", "paused": True}, DockerState.PAUSED),
    ({"extra": None, "phase": "removing"}, DockerState.REMOVING),  # an old flag written into a new record
    ({"extra": "paused"}, DockerState.PAUSED),
])
def test_records_of_an_older_narwhald(flags: dict[str, object], extra: DockerState | None) -> None:
    data = {"state": {"started_once": True, "manually_stopped": False, **flags}}
    assert upgrade(data)["state"].get("extra") == (extra.value if extra else None)
    assert EngineState(extra=extra).removing == (extra == DockerState.REMOVING)
