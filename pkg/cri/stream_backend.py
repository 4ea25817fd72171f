"""The runtime's side of streaming (``pkg.streaming.backend.StreamingBackend``):
exec into, attach to and port-forward into what the stores know."""
from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from pkg import errors
from pkg.model.state import SandboxState
from pkg.runtime.attach import ContainerAttach
from pkg.runtime.containers import ContainerService
from pkg.runtime.exec import run_exec
from pkg.runtime.sandboxes import SandboxService
from pkg.streaming.backend import ExecStreams
from pkg.streaming.netns_dial import dial_in_netns

DIAL_TIMEOUT = 10.0


class RuntimeStreaming:
    def __init__(self, sandboxes: SandboxService, containers: ContainerService) -> None:
        self._sandboxes = sandboxes
        self._containers = containers

    async def check_container_running(self, container_id: str) -> None:
        self._containers.running_id(container_id)

    async def check_sandbox_ready(self, sandbox_id: str) -> None:
        metadata, status = self._sandboxes.get(sandbox_id)
        if status.state != SandboxState.READY:
            raise errors.FailedPrecondition(f"sandbox {metadata.id} is not ready")

    async def exec(self, container_id: str, cmd: Sequence[str], streams: ExecStreams) -> int:
        full_id = self._containers.running_id(container_id)
        ctx = self._containers.ctx
        return await run_exec(ctx.client, full_id, list(cmd), streams, fifo_root=ctx.exec_dir,
                              specs=ctx.process_specs, exits=ctx.exec_exits)

    async def attach_stdio(self, container_id: str) -> ContainerAttach:
        full_id = self._containers.running_id(container_id)
        metadata, _ = self._containers.get(full_id)
        ctx = self._containers.ctx
        return ContainerAttach(ctx, metadata, ctx.stdin, self._containers.exit_event(full_id))

    async def dial(self, sandbox_id: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        metadata, _ = self._sandboxes.get(sandbox_id)
        if not 0 < port < 65536:
            raise errors.InvalidArgument(f"invalid port {port}")
        if not metadata.netns_path:  # host network: the pod's ports are the host's
            try:
                return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), DIAL_TIMEOUT)
            except OSError as exc:
                raise errors.Unavailable(f"connect to port {port}: {exc.strerror}") from None
        return await dial_in_netns(Path(metadata.netns_path), port)
