"""Docker's JSON progress stream (pull, push, load, import): one JSON object per line, written lazily.

The response head goes out with the first message, as moby's WriteFlusher
does: an operation that fails before reporting anything still answers with a
proper HTTP status (bad reference 400, unknown repository 404); a failure
after that travels in the stream as ``{"errorDetail": {...}, "error": ...}``,
which the CLI prints before exiting 1.

``PullReporter`` and ``PushReporter`` turn the core's per-blob ``Progress``
events into the messages the docker CLI renders as per-layer bars.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web

from pkg import errors
from pkg.images import media
from pkg.images.model import Progress

log = logging.getLogger(__name__)

T = TypeVar("T")
Message = dict[str, Any]
Translate = Callable[[Progress], list[Message]]

NEWLINE = b"\r\n"  # moby's streamformatter ends each message so
BAR_WIDTH = 50
THROTTLE = 0.1  # seconds between two byte-count updates of one layer
_UNITS = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")


def human_size(size: float) -> str:
    """go-units HumanSize: decimal units, 4 significant digits ("2.097MB")."""
    i = 0
    while size >= 1000 and i < len(_UNITS) - 1:
        size /= 1000
        i += 1
    return f"{size:.4g}{_UNITS[i]}"


def progress_bar(current: int, total: int) -> str:
    """The ``progress`` text moby's JSONProgress.String() renders for a 200-column server side."""
    if current <= 0 and total <= 0:
        return ""
    if total <= 0:
        return f"{human_size(current):>8}"
    percent = min(int(current / total * 100) // 2, BAR_WIDTH)
    bar = f"[{'=' * percent}>{' ' * (BAR_WIDTH - percent)}] "
    if current > total:
        return bar + f"{human_size(current):>8}"
    return bar + f"{human_size(current):>8}/{human_size(total)}"


def short_id(digest: str) -> str:
    return digest.split(":", 1)[-1][:12]


def status(text: str, ident: str = "") -> Message:
    msg: Message = {"status": text}
    if ident:
        msg["id"] = ident
    return msg


def layer_status(text: str, ident: str) -> Message:
    return {"status": text, "progressDetail": {}, "id": ident}


def layer_progress(text: str, ident: str, current: int, total: int) -> Message:
    return {"status": text, "progressDetail": {"current": current, "total": total},
            "progress": progress_bar(current, total), "id": ident}


def error_message(message: str) -> Message:
    return {"errorDetail": {"message": message}, "error": message}


class _Throttle:
    """At most one byte-count update per layer every ``interval`` seconds (the last one always passes)."""

    def __init__(self, clock: Callable[[], float], interval: float) -> None:
        self._clock = clock
        self._interval = interval
        self._last: dict[str, float] = {}

    def allow(self, ident: str, final: bool) -> bool:
        now = self._clock()
        if not final and now - self._last.get(ident, -self._interval) < self._interval:
            return False
        self._last[ident] = now
        return True


class PullReporter:
    """Per-layer pull messages: Pulling fs layer, Already exists, Downloading, Download complete,
    Extracting, Pull complete.  Only layers are shown (the config and manifests are not, as in Docker);
    a layer already present shows "Already exists" alone."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, interval: float = THROTTLE) -> None:
        self._throttle = _Throttle(clock, interval)
        self._pending: set[str] = set()
        self._existing: set[str] = set()
        self._downloaded: set[str] = set()

    def translate(self, ev: Progress) -> list[Message]:
        if ev.media_type not in media.LAYERS:
            return []
        ident = short_id(ev.digest)
        if ev.status == "waiting":
            self._pending.add(ident)  # shown once we know whether it must be fetched at all
            return []
        if ev.status == "exists":
            self._pending.discard(ident)
            self._existing.add(ident)
            return [layer_status("Already exists", ident)]
        if ident in self._existing:
            return []  # present before this pull: unpacking it is a no-op, Docker shows nothing more
        head = [layer_status("Pulling fs layer", ident)] if ident in self._pending else []
        self._pending.discard(ident)
        if ev.status == "downloading":
            if ident in self._downloaded or not self._throttle.allow(ident, ev.current >= ev.total):
                return head
            return [*head, layer_progress("Downloading", ident, ev.current, ev.total)]
        if ev.status == "downloaded":
            self._downloaded.add(ident)
            return [*head, layer_status("Verifying Checksum", ident), layer_status("Download complete", ident)]
        if ev.status == "extracting":
            return [layer_progress("Extracting", ident, 0, ev.total)]
        if ev.status == "extracted":
            return [layer_progress("Extracting", ident, ev.total, ev.total), layer_status("Pull complete", ident)]
        return []


class PushReporter:
    """Per-layer push messages: Pushing (bar), Pushed, Layer already exists."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, interval: float = THROTTLE) -> None:
        self._throttle = _Throttle(clock, interval)

    def translate(self, ev: Progress) -> list[Message]:
        if ev.media_type not in media.LAYERS:
            return []
        ident = short_id(ev.digest)
        if ev.status == "exists":
            return [layer_status("Layer already exists", ident)]
        if ev.status == "uploading":
            if not self._throttle.allow(ident, ev.current >= ev.total):
                return []
            return [layer_progress("Pushing", ident, ev.current, ev.total)]
        if ev.status == "pushed":
            return [layer_status("Pushed", ident)]
        return []


class JSONStream:
    """The response of a streaming endpoint; the 200 head is sent with the first message."""

    def __init__(self, request: web.Request) -> None:
        self._request = request
        self._response: web.StreamResponse | None = None

    @property
    def started(self) -> bool:
        return self._response is not None

    async def start(self) -> web.StreamResponse:
        if self._response is None:
            response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
            await response.prepare(self._request)
            self._response = response
        return self._response

    async def send(self, msg: Message) -> None:
        response = await self.start()
        await response.write(json.dumps(msg, separators=(",", ":")).encode() + NEWLINE)

    async def finish(self) -> web.StreamResponse:
        response = await self.start()
        await response.write_eof()
        return response

    async def fail(self, exc: BaseException) -> web.StreamResponse:
        """Report ``exc``: as an HTTP error before the head went out (re-raised), in-stream after."""
        if not self.started:
            raise exc
        if isinstance(exc, errors.NarwhalError):
            message = exc.message
        else:
            log.error("%s %s failed mid-stream", self._request.method, self._request.path, exc_info=exc)
            message = f"internal error: {exc!r}"
        await self.send(error_message(message))
        return await self.finish()


async def run_reporting(stream: JSONStream, operation: Callable[[Callable[[Progress], None]], Awaitable[T]],
                        translate: Translate) -> T:
    """Run ``operation(sink)`` while writing what ``translate`` makes of its progress events to ``stream``.

    The operation runs as a task and its events pass through a queue, so a slow client never blocks it
    between two awaits; the task is cancelled if the client goes away (this handler is cancelled).
    """
    queue: asyncio.Queue[Message] = asyncio.Queue()

    def sink(ev: Progress) -> None:
        for msg in translate(ev):
            queue.put_nowait(msg)

    task = asyncio.ensure_future(operation(sink))
    getter: asyncio.Future[Message] | None = None
    try:
        while True:
            getter = asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait({task, getter}, return_when=asyncio.FIRST_COMPLETED)
            if getter in done:
                await stream.send(getter.result())
                continue
            getter.cancel()
            while not queue.empty():
                await stream.send(queue.get_nowait())
            return task.result()
    finally:
        if getter is not None and not getter.done():
            getter.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
