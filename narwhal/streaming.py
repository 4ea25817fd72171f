"""The streaming backend on top of the runtime: exec via containerd, port-forward into the pod netns.

This is wiring (the composition root knows both sides): ``pkg.streaming``
only sees the ``StreamingBackend`` Protocol, the runtime knows nothing of
SPDY or WebSocket.
"""
from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from narwhal.runtime import Runtime
from pkg import errors
from pkg.model.state import SandboxState
from pkg.runtime.exec import run_exec
from pkg.streaming.backend import ContainerStdio, ExecStreams
from pkg.streaming.netns_dial import dial_in_netns


class RuntimeStreamingBackend:
    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    @property
    def fifo_root(self) -> Path:
        return self._runtime.ctx.cfg.state / "exec"

    async def check_container_running(self, container_id: str) -> None:
        self._runtime.containers.running_id(container_id)

    async def check_sandbox_ready(self, sandbox_id: str) -> None:
        metadata, status = self._runtime.sandboxes.get(sandbox_id)
        if status.state != SandboxState.READY:
            raise errors.FailedPrecondition(f"pod sandbox {metadata.id} is not ready ({status.state.value})")

    async def exec(self, container_id: str, cmd: Sequence[str], streams: ExecStreams) -> int:
        full_id = self._runtime.containers.running_id(container_id)
        return await run_exec(self._runtime.ctx.client, full_id, cmd, streams, fifo_root=self.fifo_root)

    async def attach_stdio(self, container_id: str) -> ContainerStdio:
        self._runtime.containers.running_id(container_id)
        # Container output goes to the CRI log through narwhal-logger (run by the shim), so there
        # is no stream to tap yet; the runtime has to expose one (see pkg/streaming/backend.py).
        raise errors.NotImplementedYet("attach is not available yet: container stdio is not exposed by the runtime")

    async def dial(self, sandbox_id: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        metadata, _ = self._runtime.sandboxes.get(sandbox_id)
        if not metadata.netns_path:  # host network: the pod's localhost is the host's
            try:
                return await asyncio.open_connection("127.0.0.1", port)
            except OSError as exc:
                raise errors.Unavailable(f"connect to port {port}: {exc.strerror or exc}") from None
        return await dial_in_netns(Path(metadata.netns_path), port)
