"""An asyncio SPDY/3.1 session over a byte transport: streams, replies, pings and flow control.

Used by the streaming server (server side: the peer opens odd-numbered
streams) and by tests as a client.  Flow control follows draft 3.1 on the
receiving side (WINDOW_UPDATE for the stream and the session as the
application consumes data), and the buffered bytes per stream are bounded:
when the application does not read, the frame reader waits, which pushes
back on TCP.  On the sending side the peer's windows are honoured once the
peer shows it speaks flow control (its first WINDOW_UPDATE or an
INITIAL_WINDOW_SIZE setting): moby/spdystream, which kubelet's and crictl's
clients use, never sends WINDOW_UPDATE, so enforcing windows against it
would stall every stream after 64 KiB.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Protocol

from pkg.streaming import spdy

log = logging.getLogger(__name__)

MAX_DATA_FRAME = 32 * 1024
LINGER = 5.0  # after GOAWAY, how long to keep reading so the peer gets our last frames (no RST)
STREAM_BUFFER_LIMIT = 1 << 20  # unread bytes per stream before the frame reader waits


class ByteTransport(Protocol):
    async def read(self) -> bytes:
        """Next chunk from the peer; b"" at EOF."""

    async def write(self, data: bytes) -> None:
        """Send all of data (raises ConnectionError when the peer is gone)."""

    def write_eof(self) -> None:
        """Half-close: the peer reads EOF, and we can still read what it sends."""

    def close(self) -> None: ...


class StreamReset(ConnectionError):
    """The stream was reset (by either side) or the session ended before it finished."""


class SpdyStream:
    """One bidirectional stream. ``read()`` returns b"" once the peer half-closed it."""

    def __init__(self, conn: SpdyConnection, stream_id: int, headers: spdy.Headers, send_window: int) -> None:
        self.conn = conn
        self.id = stream_id
        self.headers = headers
        self.reply_headers: spdy.Headers = {}
        self._buf = bytearray()
        self._readable = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._replied = asyncio.Event()
        self._send_window = send_window
        self._window_open = asyncio.Event()
        self._window_open.set()
        self._unacked = 0  # bytes consumed by the application, not yet returned in a WINDOW_UPDATE
        self.remote_closed = False
        self.local_closed = False
        self.reset = False

    def header(self, name: str) -> str:
        values = self.headers.get(name.lower())
        return values[0] if values else ""

    # ---- receiving (called by the connection) ----
    def _on_data(self, data: bytes, fin: bool) -> None:
        if data:
            self._buf += data
            if len(self._buf) >= STREAM_BUFFER_LIMIT:
                self._drained.clear()
        if fin:
            self.remote_closed = True
        self._readable.set()

    def _on_reset(self) -> None:
        self.reset = True
        self.remote_closed = True
        self.local_closed = True
        self._readable.set()
        self._drained.set()
        self._replied.set()
        self._window_open.set()

    def _grow_window(self, delta: int) -> None:
        self._send_window += delta
        if self._send_window > 0:
            self._window_open.set()

    # ---- application API ----
    async def read(self, n: int = 65536) -> bytes:
        while not self._buf:
            if self.remote_closed:
                return b""
            self._readable.clear()
            await self._readable.wait()
        data = bytes(self._buf[:n])
        del self._buf[:n]
        if len(self._buf) < STREAM_BUFFER_LIMIT:
            self._drained.set()
        await self._consumed(len(data))
        return data

    async def _consumed(self, n: int) -> None:
        self._unacked += n
        if self._unacked >= spdy.DEFAULT_WINDOW // 2 and not self.remote_closed:
            delta, self._unacked = self._unacked, 0
            await self.conn._send_window_updates(self.id, delta)

    async def reply(self, headers: spdy.Headers | None = None, fin: bool = False) -> None:
        await self.conn._send(spdy.SynReply(self.id, headers or {}, spdy.FLAG_FIN if fin else 0))
        if fin:
            self.local_closed = True
        self._replied.set()

    async def wait_reply(self) -> None:
        await self._replied.wait()
        if self.reset:
            raise StreamReset(f"stream {self.id} was reset")

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self.reset or self.local_closed:
                raise StreamReset(f"stream {self.id} is closed")
            n = min(len(view), MAX_DATA_FRAME)
            if self.conn.flow_control:
                await self.conn._wait_send_window(self)
                if self.reset:
                    raise StreamReset(f"stream {self.id} was reset")
                n = min(n, self._send_window, self.conn._session_send_window)
                self._send_window -= n
                self.conn._session_send_window -= n
                if self._send_window <= 0:
                    self._window_open.clear()
                if self.conn._session_send_window <= 0:
                    self.conn._session_window_open.clear()
            await self.conn._send(spdy.DataFrame(self.id, bytes(view[:n])))
            view = view[n:]

    async def close(self) -> None:
        """Half-close: tell the peer we will send no more (empty data frame with FIN)."""
        if self.local_closed or self.reset:
            return
        self.local_closed = True
        with contextlib.suppress(ConnectionError):
            await self.conn._send(spdy.DataFrame(self.id, b"", spdy.FLAG_FIN))
        self.conn._forget_if_done(self)

    async def abort(self, status: int = spdy.CANCEL) -> None:
        if self.reset:
            return
        self._on_reset()
        with contextlib.suppress(ConnectionError):
            await self.conn._send(spdy.RstStream(self.id, status))
        self.conn._forget_if_done(self)


StreamHandler = Callable[[SpdyStream], None]


class SpdyConnection:
    """One SPDY session. Call ``run()`` (it returns when the transport closes) and open or accept streams."""

    def __init__(self, transport: ByteTransport, *, server: bool, on_stream: StreamHandler | None = None,
                 on_activity: Callable[[], None] | None = None) -> None:
        self._transport = transport
        self._on_activity = on_activity or (lambda: None)
        self._server = server
        self._on_stream = on_stream
        self._encoder = spdy.Encoder()
        self._parser = spdy.Parser()
        self._write_lock = asyncio.Lock()
        self.streams: dict[int, SpdyStream] = {}
        self._next_id = 2 if server else 1
        self._last_peer_id = 0
        self._peer_initial_window = spdy.DEFAULT_WINDOW
        self._session_send_window = spdy.DEFAULT_WINDOW
        self._session_window_open = asyncio.Event()
        self._session_window_open.set()
        self._session_unacked = 0
        self.flow_control = False
        self.going_away = False
        self.closed = asyncio.Event()
        self._running = False
        self._next_ping = 2 if server else 1
        self._pings: dict[int, asyncio.Future[None]] = {}

    # ---- writing ----
    async def _send(self, frame: spdy.Frame) -> None:
        if self.closed.is_set():
            raise ConnectionResetError("SPDY session closed")
        async with self._write_lock:
            await self._transport.write(self._encoder.encode(frame))
        self._on_activity()

    async def _send_window_updates(self, stream_id: int, delta: int) -> None:
        """A stream's window is returned as its reader consumes (a slow reader stalls only its stream)."""
        with contextlib.suppress(ConnectionError):
            await self._send(spdy.WindowUpdate(stream_id, delta))

    async def _received(self, n: int) -> None:
        """The session's window is returned on receipt: buffering is bounded per stream (the reader
        waits for lagging streams), and data for streams that are gone must not shrink it for good."""
        self._session_unacked += n
        if self._session_unacked >= spdy.DEFAULT_WINDOW // 2:
            delta, self._session_unacked = self._session_unacked, 0
            with contextlib.suppress(ConnectionError):
                await self._send(spdy.WindowUpdate(0, delta))

    async def _wait_send_window(self, stream: SpdyStream) -> None:
        """Wait until both the stream's and the session's send windows are open."""
        while stream._send_window <= 0 or self._session_send_window <= 0:
            if stream.reset or self.closed.is_set():
                raise StreamReset(f"stream {stream.id} is closed")
            event = stream._window_open if stream._send_window <= 0 else self._session_window_open
            await event.wait()

    # ---- opening streams (client side, or server push) ----
    async def open_stream(self, headers: spdy.Headers, fin: bool = False) -> SpdyStream:
        if self.going_away or self.closed.is_set():
            raise ConnectionResetError("SPDY session is going away")
        stream_id = self._next_id
        self._next_id += 2
        stream = SpdyStream(self, stream_id, headers, self._peer_initial_window)
        stream.local_closed = fin
        self.streams[stream_id] = stream
        await self._send(spdy.SynStream(stream_id, headers, spdy.FLAG_FIN if fin else 0))
        return stream

    def refuse_new_streams(self) -> None:
        """From now on the peer's new streams are refused (RST_STREAM REFUSED_STREAM), not queued."""
        self._on_stream = None

    async def ping(self) -> None:
        ping_id = self._next_ping
        self._next_ping += 2
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pings[ping_id] = waiter
        try:
            await self._send(spdy.Ping(ping_id))
            await waiter
        finally:
            self._pings.pop(ping_id, None)

    # ---- reading ----
    async def run(self) -> None:
        """Read and dispatch frames until the peer goes away or breaks the protocol."""
        self._running = True
        try:
            while True:
                data = await self._transport.read()
                if not data:
                    break
                self._on_activity()
                for frame in self._parser.feed(data):
                    await self._dispatch(frame)
        except spdy.ProtocolError as exc:
            log.debug("SPDY protocol error from peer: %s", exc)
            with contextlib.suppress(ConnectionError):
                await self._send(spdy.GoAway(self._last_peer_id, spdy.GOAWAY_PROTOCOL_ERROR))
        except ConnectionError:
            pass
        finally:
            self._running = False
            self._shutdown()

    def _shutdown(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        self._session_window_open.set()
        for stream in list(self.streams.values()):
            stream._on_reset()
        self.streams.clear()
        for waiter in self._pings.values():
            if not waiter.done():
                waiter.set_exception(ConnectionResetError("SPDY session closed"))
        self._transport.close()

    async def close(self, linger: float = LINGER) -> None:
        """GOAWAY and half-close, then wait (bounded) for the peer to close before closing.

        Closing a socket with unread input makes the kernel send RST, and the
        peer then loses whatever of our last frames it had not read yet (the
        exit status, typically); so keep reading until the peer hangs up.
        """
        if not self.closed.is_set():
            self.going_away = True
            with contextlib.suppress(ConnectionError):
                await self._send(spdy.GoAway(self._last_peer_id, spdy.GOAWAY_OK))
                async with self._write_lock:
                    self._transport.write_eof()
            if self._running:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.closed.wait(), linger)
        self._shutdown()

    def _forget_if_done(self, stream: SpdyStream) -> None:
        if stream.reset or (stream.local_closed and stream.remote_closed):
            self.streams.pop(stream.id, None)

    async def _dispatch(self, frame: spdy.Frame) -> None:
        if isinstance(frame, spdy.DataFrame):
            await self._on_data(frame)
        elif isinstance(frame, spdy.SynStream):
            await self._on_syn_stream(frame)
        elif isinstance(frame, spdy.SynReply):
            stream = self.streams.get(frame.stream_id)
            if stream is not None:
                stream.reply_headers = frame.headers
                stream._replied.set()
                if frame.fin:
                    stream._on_data(b"", True)
                    self._forget_if_done(stream)
        elif isinstance(frame, spdy.HeadersFrame):
            stream = self.streams.get(frame.stream_id)
            if stream is not None and frame.fin:
                stream._on_data(b"", True)
                self._forget_if_done(stream)
        elif isinstance(frame, spdy.RstStream):
            stream = self.streams.pop(frame.stream_id, None)
            if stream is not None:
                stream._on_reset()
        elif isinstance(frame, spdy.Settings):
            window = frame.entries.get(spdy.SETTINGS_INITIAL_WINDOW_SIZE)
            if window is not None and 0 < window <= spdy.MAX_WINDOW:
                self.flow_control = True
                for stream in self.streams.values():
                    stream._grow_window(window - self._peer_initial_window)
                self._peer_initial_window = window
        elif isinstance(frame, spdy.Ping):
            if frame.ping_id % 2 != self._next_ping % 2:
                await self._send(frame)  # the peer's ping: echo it
            else:
                waiter = self._pings.get(frame.ping_id)
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
        elif isinstance(frame, spdy.GoAway):
            self.going_away = True
        elif isinstance(frame, spdy.WindowUpdate):
            self.flow_control = True
            if frame.stream_id == 0:
                self._session_send_window += frame.delta
                if self._session_send_window > 0:
                    self._session_window_open.set()
            else:
                stream = self.streams.get(frame.stream_id)
                if stream is not None:
                    stream._grow_window(frame.delta)

    async def _on_syn_stream(self, frame: spdy.SynStream) -> None:
        peer_parity = 1 if self._server else 0
        if frame.stream_id % 2 != peer_parity or frame.stream_id <= self._last_peer_id:
            await self._send(spdy.RstStream(frame.stream_id, spdy.PROTOCOL_ERROR))
            return
        self._last_peer_id = frame.stream_id
        if self.going_away or self._on_stream is None:
            await self._send(spdy.RstStream(frame.stream_id, spdy.REFUSED_STREAM))
            return
        stream = SpdyStream(self, frame.stream_id, frame.headers, self._peer_initial_window)
        self.streams[frame.stream_id] = stream
        if frame.fin:
            stream._on_data(b"", True)
        if frame.flags & spdy.FLAG_UNIDIRECTIONAL:
            stream.local_closed = True
        self._on_stream(stream)

    async def _on_data(self, frame: spdy.DataFrame) -> None:
        if frame.data:
            await self._received(len(frame.data))
        stream = self.streams.get(frame.stream_id)
        if stream is None:
            if frame.stream_id > max(self._last_peer_id, self._next_id):
                await self._send(spdy.RstStream(frame.stream_id, spdy.INVALID_STREAM))
            return  # late data for a stream we already forgot
        if stream.remote_closed:
            await self._send(spdy.RstStream(frame.stream_id, spdy.STREAM_ALREADY_CLOSED))
            return
        stream._on_data(frame.data, frame.fin)
        if not frame.data and not frame.fin:
            return
        if frame.fin:
            self._forget_if_done(stream)
        # Back-pressure: stop reading the socket while this stream's reader lags far behind.
        while not stream._drained.is_set() and not stream.reset and not self.closed.is_set():
            await stream._drained.wait()
