"""pkg.streaming.hijack.ReadBuffer: the input side both hijacking front ends share (order, EOF, backpressure)."""
from __future__ import annotations

import asyncio

from pkg.streaming.hijack import READ_LIMIT, ReadBuffer


def _buffer() -> tuple[ReadBuffer, list[str]]:
    calls: list[str] = []
    return ReadBuffer(lambda: calls.append("pause"), lambda: calls.append("resume")), calls


async def test_chunks_in_order_then_eof() -> None:
    buf, _ = _buffer()
    buf.feed(b"a")
    buf.feed(b"")  # ignored: an empty chunk is not EOF
    buf.feed(b"b")
    buf.feed_eof()
    assert [await buf.read(), await buf.read(), await buf.read(), await buf.read()] == [b"a", b"b", b"", b""]


async def test_read_waits_for_data() -> None:
    buf, _ = _buffer()
    reader = asyncio.ensure_future(buf.read())
    await asyncio.sleep(0)
    assert not reader.done()
    buf.feed(b"late")
    assert await asyncio.wait_for(reader, 5) == b"late"


async def test_pauses_past_the_limit_and_resumes_below_half() -> None:
    buf, calls = _buffer()
    half = READ_LIMIT // 2
    for _ in range(3):
        buf.feed(b"x" * half)
    assert calls == ["pause"]  # once, however much more arrives
    await buf.read()
    await buf.read()
    assert calls == ["pause"]  # half of READ_LIMIT still buffered
    await buf.read()
    assert calls == ["pause", "resume"]
