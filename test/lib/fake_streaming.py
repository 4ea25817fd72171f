"""A hand-written fake of ``pkg.streaming.backend.StreamingBackend`` for server tests.

Commands are tiny scripts, so tests can see each stream separately:
``["out-err", OUT, ERR, CODE]`` writes OUT to stdout and ERR to stderr and exits
with CODE; ``["cat"]`` copies stdin to stdout; ``["sizes", N]`` reports N
terminal resizes as ``WxH`` lines; ``["hang"]`` waits until cancelled;
``["boom"]`` fails with a pkg error, ``["crash"]`` with a bug.  Attach connects to a fake container
that echoes its stdin on stdout (and ``err:``-prefixed on stderr) and exits
when its stdin is closed.  ``dial`` connects to a loopback port.
"""
from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from pkg import errors
from pkg.streaming.attach import OutputBroadcaster
from pkg.streaming.backend import ExecStreams, OutputSubscription
from pkg.streaming.model import TerminalSize


@dataclass
class FakeStdio:
    tty: bool = False
    stdin: bool = True
    stdin_once: bool = True
    broadcaster: OutputBroadcaster = field(default_factory=OutputBroadcaster)
    resizes: list[TerminalSize] = field(default_factory=list)
    stdin_closed: bool = False

    def subscribe(self) -> OutputSubscription:
        return self.broadcaster.subscribe()

    async def write_stdin(self, data: bytes) -> None:
        self.broadcaster.publish("stdout", data)
        self.broadcaster.publish("stderr", b"err:" + data)

    async def close_stdin(self) -> None:
        self.stdin_closed = True
        self.broadcaster.end()

    async def resize(self, size: TerminalSize) -> None:
        self.resizes.append(size)


class FakeBackend:
    def __init__(self) -> None:
        self.containers: dict[str, FakeStdio] = {"c1": FakeStdio()}
        self.sandboxes = {"pod1"}
        self.cancelled: list[Sequence[str]] = []
        self.running = 0

    async def check_container_running(self, container_id: str) -> None:
        if container_id not in self.containers:
            raise errors.NotFound(f"container {container_id} not found")

    async def check_sandbox_ready(self, sandbox_id: str) -> None:
        if sandbox_id not in self.sandboxes:
            raise errors.NotFound(f"sandbox {sandbox_id} not found")

    async def exec(self, container_id: str, cmd: Sequence[str], streams: ExecStreams) -> int:
        await self.check_container_running(container_id)
        self.running += 1
        try:
            return await self._run(list(cmd), streams)
        except asyncio.CancelledError:
            self.cancelled.append(cmd)
            raise
        finally:
            self.running -= 1

    async def _run(self, cmd: list[str], streams: ExecStreams) -> int:
        if cmd[0] == "out-err":
            if streams.stdout is not None:
                await streams.stdout.write(cmd[1].encode())
            if streams.stderr is not None:
                await streams.stderr.write(cmd[2].encode())
            return int(cmd[3])
        if cmd[0] == "cat":
            assert streams.stdin is not None and streams.stdout is not None
            while data := await streams.stdin.read():
                await streams.stdout.write(data)
            return 0
        if cmd[0] == "sizes":
            assert streams.resize is not None and streams.stdout is not None
            for _ in range(int(cmd[1])):
                size = await streams.resize.next()
                assert size is not None
                await streams.stdout.write(f"{size.width}x{size.height}\n".encode())
            return 0
        if cmd[0] == "hang":
            await asyncio.Event().wait()
        if cmd[0] == "boom":
            raise errors.FailedPrecondition("container is not running")
        if cmd[0] == "crash":
            raise RuntimeError("a bug in the backend")
        return 127

    async def attach_stdio(self, container_id: str) -> FakeStdio:
        await self.check_container_running(container_id)
        return self.containers[container_id]

    async def dial(self, sandbox_id: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        await self.check_sandbox_ready(sandbox_id)
        try:
            return await asyncio.open_connection("127.0.0.1", port)
        except ConnectionRefusedError:
            raise errors.Unavailable(f"nothing listens on port {port}") from None
