"""What the streaming server needs from the runtime: narrow Protocols, one per verb.

The server owns the wire (SPDY, WebSocket, tokens); the runtime owns
containers.  The runtime implements ``StreamingBackend``:

* ``exec`` runs a command in a running container with the given streams and
  returns its exit code (``pkg.runtime.exec.run_exec`` does the containerd
  part); cancelling it must kill the process and clean up.
* ``attach_stdio`` hands out the container's own stdio as a
  ``ContainerStdio``; ``pkg.streaming.attach.OutputBroadcaster`` is a ready
  fan-out for the container's output that the runtime can feed from its fifos.
* ``dial`` opens a TCP connection to a port inside the pod's network
  namespace (``pkg.streaming.netns_dial.dial_in_netns`` does it from a path).
* ``check_container_running`` / ``check_sandbox_ready`` let the CRI RPCs
  refuse (NotFound, FailedPrecondition) before a token is minted.
"""
from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from pkg.streaming.model import TerminalSize


class InputStream(Protocol):
    """Bytes from the client (stdin)."""

    async def read(self) -> bytes:
        """The next chunk; b"" once the client closed its stdin (or went away)."""


class OutputStream(Protocol):
    """Bytes to the client (stdout or stderr)."""

    async def write(self, data: bytes) -> None:
        """Raises ConnectionError once the client is gone."""


class ResizeEvents(Protocol):
    async def next(self) -> TerminalSize | None:
        """The next terminal size the client asked for; None when no more will come."""


@dataclass
class ExecStreams:
    """The client's side of an exec or attach session; absent streams were not requested."""

    tty: bool
    stdin: InputStream | None = None
    stdout: OutputStream | None = None
    stderr: OutputStream | None = None
    resize: ResizeEvents | None = None


class OutputSubscription(Protocol):
    async def read(self) -> tuple[str, bytes] | None:
        """Next ("stdout" | "stderr", data) of the container's output; None when its output ended."""

    def close(self) -> None: ...


class ContainerStdio(Protocol):
    """A running container's own stdio, as it was configured (what Attach connects to)."""

    @property
    def tty(self) -> bool: ...

    @property
    def stdin(self) -> bool:
        """The container was created with stdin open."""

    @property
    def stdin_once(self) -> bool:
        """Close the container's stdin when the first attached client closes its stdin."""

    def subscribe(self) -> OutputSubscription:
        """Output from now on, until the container's output ends (it exited) or ``close()``."""

    async def write_stdin(self, data: bytes) -> None: ...

    async def close_stdin(self) -> None: ...

    async def resize(self, size: TerminalSize) -> None: ...


class StreamingBackend(Protocol):
    async def check_container_running(self, container_id: str) -> None: ...

    async def check_sandbox_ready(self, sandbox_id: str) -> None: ...

    async def exec(self, container_id: str, cmd: Sequence[str], streams: ExecStreams) -> int: ...

    async def attach_stdio(self, container_id: str) -> ContainerStdio: ...

    async def dial(self, sandbox_id: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]: ...
