"""What recovery (pkg.docker.engine.recover) needs of the Engine, by shape: engine.py imports recover, so
recover names the Engine through this Protocol instead of importing engine.py back."""
from __future__ import annotations

from typing import Protocol

from pkg.docker.engine.lifecycle import Lifecycle
from pkg.docker.engine.model import EngineRecord
from pkg.docker.engine.records import RecordStore
from pkg.docker.engine.registry import Registry
from pkg.docker.volumes.service import VolumeService
from pkg.runtime.containers import ContainerService
from pkg.runtime.context import RuntimeContext
from pkg.runtime.sandboxes import SandboxService


class Engine(Protocol):
    @property
    def ctx(self) -> RuntimeContext: ...
    @property
    def sandboxes(self) -> SandboxService: ...
    @property
    def containers(self) -> ContainerService: ...
    @property
    def registry(self) -> Registry: ...
    @property
    def lifecycle(self) -> Lifecycle: ...
    @property
    def volumes(self) -> VolumeService | None: ...
    @property
    def store(self) -> RecordStore: ...

    async def release(self, record: EngineRecord, volumes: bool = False) -> None: ...

    async def remove_now(self, container_id: str, volumes: bool = False) -> None: ...

    async def remove_sandbox_if_unused(self, sandbox_id: str, exclude: str) -> None: ...
