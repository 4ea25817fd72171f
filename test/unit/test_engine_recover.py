"""pkg.docker.engine.recover against hand-written fakes of the runtime's services: what a narwhald that was
killed at any point finds on disk and in containerd, and what recovery makes of it."""
from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

from pkg.docker.engine import translate
from pkg.docker.engine.engine import Engine
from pkg.docker.engine.model import (
    ContainerSpec,
    EngineRecord,
    EngineState,
    HostConfig,
    Phase,
    RestartPolicy,
    RestartPolicyName,
)
from pkg.events import EventBus
from pkg.model.container import ContainerConfig, ContainerMetadata, ContainerStatus
from pkg.model.sandbox import SandboxConfig, SandboxMetadata, SandboxStatus
from pkg.model.state import ContainerState, SandboxState
from pkg.store import Store


class FakeCtx:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.containers: Store[ContainerMetadata, ContainerStatus] = Store("container")
        self.sandboxes: Store[SandboxMetadata, SandboxStatus] = Store("sandbox")
        self.events = EventBus().domain("docker")

    def sandbox_root(self, sandbox_id: str) -> Path:
        return self.root / "sandboxes" / sandbox_id


class FakeContainers:
    """The part of ContainerService the engine's recovery and restarts use."""

    def __init__(self, ctx: FakeCtx) -> None:
        self.ctx = ctx
        self.removed: list[str] = []
        self.started: list[str] = []

    async def remove(self, ref: str) -> None:
        self.removed.append(ref)
        self.ctx.containers.delete(ref)

    def exit_event(self, container_id: str) -> asyncio.Event:
        return asyncio.Event()

    def get(self, ref: str) -> tuple[ContainerMetadata, ContainerStatus]:
        return self.ctx.containers.get(ref)

    async def start(self, ref: str, *, again: bool = False) -> None:
        self.started.append(ref)
        await self.ctx.containers.update(ref, lambda s: dataclasses.replace(s, state=ContainerState.RUNNING))


class FakeSandboxes:
    def __init__(self, ctx: FakeCtx) -> None:
        self.ctx = ctx
        self.removed: list[str] = []

    async def remove(self, ref: str) -> None:
        self.removed.append(ref)
        self.ctx.sandboxes.delete(ref)


def _id(char: str) -> str:
    return char * 64


def _sandbox(ctx: FakeCtx, sandbox_id: str, owner: str = "") -> None:
    labels = {translate.ENGINE_LABEL: owner} if owner else {}
    ctx.sandboxes.add(sandbox_id, SandboxMetadata(sandbox_id, SandboxConfig("n", sandbox_id, "docker", labels=labels),
                                                  "runc", 0), SandboxStatus(SandboxState.READY))


def _container(ctx: FakeCtx, container_id: str, sandbox_id: str, state: ContainerState, code: int = 0) -> None:
    metadata = ContainerMetadata(container_id, sandbox_id, ContainerConfig("n", "busybox"), "sha256:x", "busybox", 0)
    ctx.containers.add(container_id, metadata, ContainerStatus(state, exit_code=code, started_at=1, finished_at=2))


def _record(container_id: str, sandbox_id: str, policy: RestartPolicyName = RestartPolicyName.NO,
            **state: Any) -> EngineRecord:
    return EngineRecord(id=container_id, name=f"c{container_id[0]}", sandbox_id=sandbox_id, owns_sandbox=True,
                        image_id="sha256:x", created=0, config=ContainerSpec(image="busybox", cmd=("true",)),
                        host_config=HostConfig(restart_policy=RestartPolicy(policy),
                                               auto_remove=bool(state.pop("auto_remove", False))),
                        state=EngineState(started_once=True, **state))


def test_recovery_after_a_crash_at_any_point(tmp_path: Path) -> None:
    async def body() -> None:
        ctx = FakeCtx(tmp_path)
        containers, sandboxes = FakeContainers(ctx), FakeSandboxes(ctx)
        engine = Engine(sandboxes, containers, None, None)  # type: ignore[arg-type]
        store = engine.store
        # a: running and whole; b: its core container vanished; c: remove cut short (REMOVING);
        # d: create cut short after the core container (a directory with its log, no record);
        # e: create cut short after the sandbox (no record, no dir); f: a sandbox nobody labelled (kept);
        # g: "always", stopped by hand, exited while narwhald was down (comes back);
        # h: "unless-stopped", stopped by hand (stays down); i: --rm, exited meanwhile (removed).
        for c in "abcdgi":
            _sandbox(ctx, _id(c.upper()), owner=_id(c))
        _sandbox(ctx, _id("E"), owner=_id("e"))
        _sandbox(ctx, _id("F"))
        _sandbox(ctx, _id("H"), owner=_id("h"))
        _container(ctx, _id("a"), _id("A"), ContainerState.RUNNING)
        _container(ctx, _id("c"), _id("C"), ContainerState.EXITED)
        _container(ctx, _id("d"), _id("D"), ContainerState.CREATED)
        _container(ctx, _id("g"), _id("G"), ContainerState.EXITED, 137)
        _container(ctx, _id("h"), _id("H"), ContainerState.EXITED, 137)
        _container(ctx, _id("i"), _id("I"), ContainerState.EXITED, 0)
        await store.write(_record(_id("a"), _id("A")))
        await store.write(_record(_id("b"), _id("B")))
        await store.write(_record(_id("c"), _id("C"), phase=Phase.REMOVING))
        await store.write(_record(_id("g"), _id("G"), RestartPolicyName.ALWAYS, manually_stopped=True))
        await store.write(_record(_id("h"), _id("H"), RestartPolicyName.UNLESS_STOPPED, manually_stopped=True))
        await store.write(_record(_id("i"), _id("I"), auto_remove=True))
        (store.dir(_id("d"))).mkdir(parents=True)
        (store.dir(_id("d")) / "container.log").write_text("")

        await engine.start_engine()
        for _ in range(50):  # the restart of g runs in the background
            if _id("g") in containers.started:
                break
            await asyncio.sleep(0.01)

        assert sorted(r.name for r in engine.registry) == ["ca", "cg", "ch"]
        assert sorted(p.name for p in store.root.iterdir()) == sorted([_id("a"), _id("g"), _id("h")])
        assert set(containers.removed) == {_id("b"), _id("c"), _id("d"), _id("i")}  # b: idempotent, gone already
        assert set(sandboxes.removed) == {_id("B"), _id("C"), _id("D"), _id("E"), _id("I")}
        assert ctx.sandboxes.find(_id("F")) is not None  # not the engine's
        assert containers.started == [_id("g")]
        g = engine.get("cg")
        assert g.running and g.restart_count == 1 and not g.record.state.manually_stopped
        assert not engine.get("ch").running and engine.get("ch").record.state.manually_stopped
        await engine.close()

    asyncio.run(body())
