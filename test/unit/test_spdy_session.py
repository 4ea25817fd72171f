"""SPDY sessions over an in-memory pipe: streams, half-close, reset, ping, and flow control both ways."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from pkg.streaming import spdy
from pkg.streaming.spdy_conn import SpdyConnection, SpdyStream, StreamReset


class Pipe:
    """One direction-pair of an in-memory byte connection."""

    def __init__(self, inbox: asyncio.Queue[bytes], outbox: asyncio.Queue[bytes]) -> None:
        self._in, self._out = inbox, outbox
        self.closed = False
        self.sent: list[bytes] = []

    async def read(self) -> bytes:
        return await self._in.get()

    async def write(self, data: bytes) -> None:
        if self.closed:
            raise ConnectionResetError("closed")
        self.sent.append(data)
        self._out.put_nowait(data)

    def write_eof(self) -> None:
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._out.put_nowait(b"")


class Pair:
    def __init__(self) -> None:
        a: asyncio.Queue[bytes] = asyncio.Queue()
        b: asyncio.Queue[bytes] = asyncio.Queue()
        self.incoming: asyncio.Queue[SpdyStream] = asyncio.Queue()
        self.server_pipe = Pipe(a, b)
        self.client_pipe = Pipe(b, a)
        self.server = SpdyConnection(self.server_pipe, server=True, on_stream=self.incoming.put_nowait)
        self.client = SpdyConnection(self.client_pipe, server=False)
        self.tasks = [asyncio.create_task(self.server.run()), asyncio.create_task(self.client.run())]

    async def accept(self) -> SpdyStream:
        stream = await self.incoming.get()
        await stream.reply()
        return stream

    async def close(self) -> None:
        await self.client.close()
        await asyncio.gather(*self.tasks)


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    p = Pair()
    yield p
    await p.close()


async def test_stream_round_trip_with_half_close(pair: Pair) -> None:
    out = await pair.client.open_stream({"streamtype": ["stdin"]})
    served = await pair.accept()
    await out.wait_reply()
    assert served.header("streamtype") == "stdin" and served.id == 1
    await out.write(b"ping")
    await out.close()
    assert await served.read() == b"ping"
    assert await served.read() == b""  # FIN
    await served.write(b"pong")
    await served.close()
    assert await out.read() == b"pong"
    assert await out.read() == b""
    assert served.id not in pair.server.streams  # both halves closed: forgotten


async def test_reset_wakes_readers_and_refuses_writes(pair: Pair) -> None:
    out = await pair.client.open_stream({"streamtype": ["stdout"]})
    served = await pair.accept()
    reading = asyncio.create_task(served.read())
    await out.abort()
    assert await reading == b""
    with pytest.raises(StreamReset):
        await served.write(b"x")


async def test_ping_is_answered(pair: Pair) -> None:
    await asyncio.wait_for(pair.client.ping(), 10)
    await asyncio.wait_for(pair.server.ping(), 10)


async def test_flow_control_waits_for_window_updates_from_an_aware_peer(pair: Pair) -> None:
    out = await pair.client.open_stream({"streamtype": ["data"]})
    served = await pair.accept()
    await out.wait_reply()
    # Teach the client that the server speaks flow control: it sends a WINDOW_UPDATE as it reads.
    big = b"x" * (3 * spdy.DEFAULT_WINDOW)
    writer = asyncio.create_task(out.write(big))
    await asyncio.sleep(0)
    received = bytearray()
    while len(received) < len(big):
        received += await served.read()
    await writer
    assert bytes(received) == big
    await pair.client.ping()  # frames are handled in order: the updates came before the pong
    assert pair.client.flow_control  # the server's WINDOW_UPDATEs switched enforcement on


async def test_sender_stops_at_the_window_until_the_reader_consumes() -> None:
    p = Pair()
    out = await p.client.open_stream({"streamtype": ["data"]})
    served = await p.accept()
    await out.wait_reply()
    p.client.flow_control = True  # as if the peer had announced flow control
    writer = asyncio.create_task(out.write(b"y" * (2 * spdy.DEFAULT_WINDOW)))
    # The writer can put exactly one window on the wire before it must wait.
    while out._send_window > 0:
        await asyncio.sleep(0)
    for _ in range(20):
        await asyncio.sleep(0)
    assert not writer.done()
    got = 0
    while got < 2 * spdy.DEFAULT_WINDOW:
        got += len(await served.read())
    await writer
    await p.close()


async def test_peer_eof_resets_every_stream(pair: Pair) -> None:
    out = await pair.client.open_stream({"streamtype": ["stdout"]})
    served = await pair.accept()
    pair.client_pipe.close()  # the client vanishes
    assert await served.read() == b""
    await asyncio.wait_for(pair.server.closed.wait(), 10)
    with pytest.raises(ConnectionError):
        await served.write(b"late")
    del out


async def test_garbage_ends_the_session_with_goaway() -> None:
    p = Pair()
    p.server_pipe._in.put_nowait(b"\x80\x02\x00\x06\x00\x00\x00\x04\x00\x00\x00\x01")  # SPDY/2 ping
    await asyncio.wait_for(p.server.closed.wait(), 10)
    frames = spdy.Parser().feed(b"".join(p.server_pipe.sent))
    assert frames == [spdy.GoAway(0, spdy.GOAWAY_PROTOCOL_ERROR)]
    await p.close()


async def test_many_small_streams_do_not_starve_the_session_window(pair: Pair) -> None:
    pair.client.flow_control = True  # an aware client: it honours our windows
    chunk = b"z" * 20_000  # each stream stays below the point where its own window is returned

    async def one() -> bytes:
        out = await pair.client.open_stream({"streamtype": ["data"]})
        await out.wait_reply()
        await out.write(chunk)
        await out.close()
        return b""

    async def serve() -> int:
        total = 0
        for _ in range(10):
            stream = await pair.accept()
            while data := await stream.read():
                total += len(data)
        return total

    server = asyncio.create_task(serve())
    for _ in range(10):  # one after the other: 200 kB through a 64 kB session window
        await asyncio.wait_for(one(), 30)
    assert await asyncio.wait_for(server, 30) == 200_000
