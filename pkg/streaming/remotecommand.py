"""Kubernetes remotecommand (exec/attach) semantics, and its SPDY/3.1 transport.

The error stream carries the outcome: from v4 on, a ``metav1.Status`` JSON
(``Success``, or ``Failure`` with reason ``NonZeroExitCode`` and the code as
an ``ExitCode`` cause, which client-go turns into the command's exit code);
before v4, a plain message and nothing on success.  The resize stream carries
a sequence of ``{"Width": w, "Height": h}`` JSON objects.

Over SPDY the client opens one stream per channel (header ``streamtype``:
error, stdin, stdout, stderr, resize); the server replies to each and starts
once all expected streams are there.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass
from typing import Any, Protocol

from pkg import errors
from pkg.streaming import spdy
from pkg.streaming.attach import relay_attach
from pkg.streaming.backend import ExecStreams, StreamingBackend
from pkg.streaming.model import AttachRequest, ExecRequest, TerminalSize
from pkg.streaming.spdy_conn import SpdyConnection, SpdyStream

log = logging.getLogger(__name__)

V1 = "channel.k8s.io"
V2 = "v2.channel.k8s.io"
V3 = "v3.channel.k8s.io"
V4 = "v4.channel.k8s.io"
V5 = "v5.channel.k8s.io"
SPDY_PROTOCOLS = (V5, V4, V3, V2, V1)

MAX_RESIZE_MESSAGE = 4096


# ---- outcome as a Status (sans I/O) ----
def success_status() -> dict[str, Any]:
    return {"metadata": {}, "status": "Success"}


def exit_code_status(code: int, cmd: tuple[str, ...] = ()) -> dict[str, Any]:
    what = f"error executing command {list(cmd)}, exit code {code}" if cmd else f"exit code {code}"
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"command terminated with non-zero exit code: {what}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }


def internal_error_status(message: str) -> dict[str, Any]:
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"Internal error occurred: {message}",
        "reason": "InternalError",
        "details": {"causes": [{"message": message}]},
        "code": 500,
    }


def encode_status(status: dict[str, Any], protocol: str) -> bytes:
    """The bytes to put on the error stream for this protocol version (b"" means nothing)."""
    if protocol in (V4, V5):
        return json.dumps(status, separators=(",", ":")).encode()
    if status.get("status") == "Success":
        return b""
    return str(status.get("message", "")).encode()


class ResizeDecoder:
    """Splits a byte stream of concatenated JSON objects into terminal sizes (sans I/O)."""

    def __init__(self) -> None:
        self._buf = ""
        self._decoder = json.JSONDecoder()

    def feed(self, data: bytes) -> list[TerminalSize]:
        self._buf += data.decode("utf-8", errors="replace")
        sizes = []
        while True:
            text = self._buf.lstrip()
            if not text:
                self._buf = ""
                break
            try:
                obj, end = self._decoder.raw_decode(text)
            except RecursionError:
                raise errors.InvalidArgument("resize stream: JSON nested too deeply") from None
            except json.JSONDecodeError:
                if len(text) > MAX_RESIZE_MESSAGE:
                    raise errors.InvalidArgument("resize stream: not JSON") from None
                self._buf = text
                break
            self._buf = text[end:]
            size = size_from_json(obj)
            if size is not None:
                sizes.append(size)
        return sizes


def size_from_json(obj: Any) -> TerminalSize | None:
    if not isinstance(obj, dict):
        return None
    width, height = obj.get("Width", obj.get("width")), obj.get("Height", obj.get("height"))
    if not isinstance(width, int) or not isinstance(height, int) or not (0 <= width < 65536 and 0 <= height < 65536):
        return None
    return TerminalSize(width, height)


async def run_command(backend: StreamingBackend, request: ExecRequest | AttachRequest,
                      streams: ExecStreams) -> dict[str, Any]:
    """Run the exec or attach to completion and describe the outcome as a Status."""
    try:
        if isinstance(request, ExecRequest):
            code = await backend.exec(request.container_id, request.cmd, streams)
            return success_status() if code == 0 else exit_code_status(code, request.cmd)
        stdio = await backend.attach_stdio(request.container_id)
        await relay_attach(stdio, streams)
        return success_status()
    except errors.NarwhalError as exc:
        verb = "executing command in" if isinstance(request, ExecRequest) else "attaching to"
        return internal_error_status(f"error {verb} container: {exc.message}")
    except ConnectionError:
        raise
    except Exception as exc:  # noqa: BLE001 - a bug: log it, but still tell the client why its session ended
        log.exception("streaming %s failed unexpectedly", type(request).__name__)
        return internal_error_status(f"internal error: {exc!r}")


async def until_closed(work: asyncio.Future[Any], closed: asyncio.Event) -> bool:
    """Wait for ``work``; if the client goes away first, cancel it. True if it finished on its own."""
    waiter = asyncio.ensure_future(closed.wait())
    try:
        await asyncio.wait([work, waiter], return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:  # we are being stopped: the work goes with us
        work.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await work
        raise
    finally:
        waiter.cancel()
    if work.done():
        return True
    work.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await work
    return False


class _Readable(Protocol):
    async def read(self) -> bytes: ...


class StreamResize:
    """Terminal sizes decoded from a resize stream (a SPDY stream or a WebSocket channel)."""

    def __init__(self, stream: _Readable) -> None:
        self._stream = stream
        self._decoder = ResizeDecoder()
        self._pending: list[TerminalSize] = []

    async def next(self) -> TerminalSize | None:
        while not self._pending:
            data = await self._stream.read()
            if not data:
                return None
            try:
                self._pending.extend(self._decoder.feed(data))
            except errors.InvalidArgument:
                return None
        return self._pending.pop(0)


# ---- SPDY ----


@dataclass
class SpdyStreams:
    error: SpdyStream
    stdin: SpdyStream | None = None
    stdout: SpdyStream | None = None
    stderr: SpdyStream | None = None
    resize: SpdyStream | None = None

    def exec_streams(self, tty: bool) -> ExecStreams:
        return ExecStreams(tty=tty, stdin=self.stdin, stdout=self.stdout, stderr=self.stderr,
                           resize=StreamResize(self.resize) if self.resize is not None else None)


def expected_stream_types(request: ExecRequest | AttachRequest, protocol: str) -> set[str]:
    expected = {"error"}
    if request.stdin:
        expected.add("stdin")
    if request.stdout:
        expected.add("stdout")
    if request.stderr and not request.tty:
        expected.add("stderr")
    if request.tty and protocol not in (V1, V2):
        expected.add("resize")
    return expected


async def collect_streams(incoming: asyncio.Queue[SpdyStream], expected: set[str], timeout: float,
                          closed: asyncio.Event) -> SpdyStreams:
    """Reply to the client's streams until every expected type is there (kubelet's waitForStreams)."""
    found: dict[str, SpdyStream] = {}

    async def gather() -> None:
        while not expected <= found.keys():
            stream = await incoming.get()
            kind = stream.header("streamtype")
            await stream.reply()
            if kind in ("error", "stdin", "stdout", "stderr", "resize") and kind not in found:
                found[kind] = stream
            else:
                log.debug("ignoring unexpected stream %r", kind)
                await stream.abort()

    task = asyncio.create_task(gather())
    try:
        finished = await asyncio.wait_for(until_closed(task, closed), timeout)
    except TimeoutError:
        raise errors.DeadlineExceeded("timed out waiting for the client to create streams") from None
    if not finished:
        raise errors.Cancelled("client went away while creating streams")
    task.result()
    while not incoming.empty():  # streams beyond the expected ones get nothing
        await incoming.get_nowait().abort(spdy.REFUSED_STREAM)
    return SpdyStreams(error=found["error"], stdin=found.get("stdin"), stdout=found.get("stdout"),
                       stderr=found.get("stderr"), resize=found.get("resize"))


async def serve_spdy(conn: SpdyConnection, incoming: asyncio.Queue[SpdyStream], protocol: str,
                     request: ExecRequest | AttachRequest, backend: StreamingBackend,
                     stream_timeout: float) -> None:
    """One exec/attach session over an established SPDY connection (its reader runs elsewhere)."""
    try:
        streams = await collect_streams(incoming, expected_stream_types(request, protocol), stream_timeout,
                                        conn.closed)
    except errors.NarwhalError as exc:
        log.debug("remotecommand: %s", exc.message)
        return
    except ConnectionError:
        return  # the client went away while we replied to its streams
    conn.refuse_new_streams()
    work = asyncio.create_task(run_command(backend, request, streams.exec_streams(request.tty)),
                               name="remotecommand")
    if not await until_closed(work, conn.closed):
        return  # the client went away; the command was cancelled
    try:
        status = work.result()
    except ConnectionError:
        return  # the client went away as the command ended
    with contextlib.suppress(ConnectionError):
        for out in (streams.stdout, streams.stderr):
            if out is not None:
                await out.close()
        payload = encode_status(status, protocol)
        if payload:
            await streams.error.write(payload)
        await streams.error.close()
