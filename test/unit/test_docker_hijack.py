"""dockerapi.hijack over a real aiohttp server on a unix socket: the upgrade head, framing, half-close, detach keys."""
from __future__ import annotations

import asyncio
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from dockerapi import hijack, versions
from pkg import errors

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _echo_after_eof(request: web.Request) -> web.StreamResponse:
    """Collect the client's bytes until its half-close, then answer on both streams (as `exec -i cat`)."""
    response, conn = await hijack.hijack(request, tty=request.query.get("tty") == "1")
    try:
        received = bytearray()
        while chunk := await conn.read():
            received += chunk
        raw = request.query.get("tty") == "1"
        await hijack.OutputStream(conn, hijack.STDOUT, raw).write(bytes(received))
        await hijack.OutputStream(conn, hijack.STDERR, raw).write(b"done")
    finally:
        conn.close()
    return response


async def _failing(request: web.Request) -> web.StreamResponse:
    """An error after the head goes on the stream; a bug closes the connection (no HTTP response on it)."""

    async def session(conn: hijack.HijackedConnection) -> None:
        if request.query.get("bug"):
            raise RuntimeError("a bug")
        raise errors.Conflict("container x is not running")

    return await hijack.serve(request, tty=False, session=session)


lost_seen: list[bool] = []


async def _wait_for_loss(request: web.Request) -> web.StreamResponse:
    """A client that closes entirely looks like a half-close until output fails: then ``lost`` is set."""
    response, conn = await hijack.hijack(request, tty=False)
    try:
        assert await conn.read() == b""
        with pytest.raises(ConnectionResetError):
            for _ in range(1000):
                await conn.write(b"x" * 1024)
                await asyncio.sleep(0.01)
        await asyncio.wait_for(conn.lost.wait(), 10)
        lost_seen.append(True)
    finally:
        conn.close()
    return response


@web.middleware
async def _version(request: web.Request, handler: Handler) -> web.StreamResponse:
    """What dockerapi.middleware does for the version (the rest of it is not under test here)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        request[versions.REQUEST_KEY] = request.match_info.get("version", versions.API_VERSION)
    return await handler(request)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Path]:
    app = web.Application(middlewares=[_version])
    for path, handler in (("/echo", _echo_after_eof), ("/lost", _wait_for_loss), ("/fail", _failing)):
        app.router.add_post(path, handler)
        app.router.add_post(r"/v{version:[0-9][0-9.]*}" + path, handler)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    sock = tmp_path / "d.sock"
    await web.UnixSite(runner, str(sock)).start()
    yield sock
    await runner.cleanup()


async def _request(sock: Path, path: str, upgrade: bool = True, body: bytes = b""
                   ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    reader, writer = await asyncio.open_unix_connection(str(sock))
    head = f"POST {path} HTTP/1.1\r\nHost: docker\r\nContent-Length: {len(body)}\r\n"
    if upgrade:
        head += "Connection: Upgrade\r\nUpgrade: tcp\r\n"
    writer.write(head.encode() + b"\r\n" + body)
    await writer.drain()
    response_head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    return reader, writer, response_head


async def test_upgrade_then_half_close_keeps_output_flowing(server: Path) -> None:
    reader, writer, head = await _request(server, "/echo", body=b'{"Detach": false}')
    assert head.startswith(b"HTTP/1.1 101 UPGRADED\r\n")
    assert b"Upgrade: tcp" in head and b"Connection: Upgrade" in head
    assert b"Content-Type: application/vnd.docker.multiplexed-stream" in head
    writer.write(b"hello ")
    writer.write(b"world")
    await writer.drain()
    writer.write_eof()  # the client's stdin ended: it shuts its write side and keeps reading
    data = await asyncio.wait_for(reader.read(), 10)
    assert hijack.parse_frames(data) == [(hijack.STDOUT, b"hello world"), (hijack.STDERR, b"done")]
    writer.close()
    await writer.wait_closed()


async def test_without_upgrade_200_raw_stream_no_chunking(server: Path) -> None:
    reader, writer, head = await _request(server, "/echo?tty=1", upgrade=False)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Type: application/vnd.docker.raw-stream" in head
    assert b"Transfer-Encoding" not in head and b"Content-Length" not in head
    writer.write(b"abc")
    writer.write_eof()
    assert await asyncio.wait_for(reader.read(), 10) == b"abcdone"
    writer.close()
    await writer.wait_closed()


async def test_old_api_versions_get_raw_stream_type_for_multiplexed_output(server: Path) -> None:
    reader, writer, head = await _request(server, "/v1.41/echo")
    assert b"Content-Type: application/vnd.docker.raw-stream" in head
    writer.write_eof()
    assert hijack.parse_frames(await asyncio.wait_for(reader.read(), 10)) == [(hijack.STDERR, b"done")]
    writer.close()
    await writer.wait_closed()


async def test_client_going_away_is_seen(server: Path) -> None:
    lost_seen.clear()
    _, writer, _ = await _request(server, "/lost")
    writer.close()
    await writer.wait_closed()
    for _ in range(100):
        if lost_seen:
            break
        await asyncio.sleep(0.05)
    assert lost_seen == [True]


async def test_errors_after_the_head_go_on_the_stream(server: Path, caplog: pytest.LogCaptureFixture) -> None:
    reader, writer, head = await _request(server, "/fail")
    assert head.startswith(b"HTTP/1.1 101 UPGRADED")
    assert hijack.parse_frames(await asyncio.wait_for(reader.read(), 10)) == [
        (hijack.STDOUT, b"container x is not running\r\n")]
    writer.close()
    await writer.wait_closed()
    reader, writer, head = await _request(server, "/fail?bug=1")
    assert await asyncio.wait_for(reader.read(), 10) == b""  # closed, nothing after the head
    assert "failed after the connection was hijacked" in caplog.text
    writer.close()
    await writer.wait_closed()


def test_frames_round_trip_and_reject_truncation() -> None:
    data = hijack.frame(hijack.STDOUT, b"a") + hijack.frame(hijack.STDERR, b"") + hijack.frame(1, b"xyz")
    assert data[:8] == b"\x01\x00\x00\x00\x00\x00\x00\x01"
    assert hijack.parse_frames(data) == [(1, b"a"), (2, b""), (1, b"xyz")]
    with pytest.raises(ValueError):
        hijack.parse_frames(data[:-1])


@pytest.mark.parametrize(("spec", "expected"), [
    ("", b"\x10\x11"),
    ("ctrl-p,ctrl-q", b"\x10\x11"),
    ("ctrl-a", b"\x01"),
    ("a,b", b"ab"),
    ("ctrl-@,ctrl-[,ctrl-\\,ctrl-],ctrl-^,ctrl-_", bytes([0, 27, 28, 29, 30, 31])),
])
def test_detach_keys(spec: str, expected: bytes) -> None:
    assert hijack.parse_detach_keys(spec) == expected


@pytest.mark.parametrize("spec", ["ctrl-", "ctrl-1", "abc", "ctrl-p,,"])
def test_bad_detach_keys(spec: str) -> None:
    with pytest.raises(errors.InvalidArgument, match="Invalid detach keys"):
        hijack.parse_detach_keys(spec)


class _Chunks:
    """A HijackedConnection stand-in that yields the given chunks, then EOF."""

    def __init__(self, *chunks: bytes) -> None:
        self._chunks = list(chunks)

    async def read(self) -> bytes:
        return self._chunks.pop(0) if self._chunks else b""


async def _drain(stream: hijack.InputStream) -> bytes:
    out = bytearray()
    while chunk := await stream.read():
        out += chunk
    return bytes(out)


async def test_detach_sequence_ends_input() -> None:
    stream = hijack.InputStream(_Chunks(b"ls\r", b"\x10", b"\x11after"), b"\x10\x11")
    assert await _drain(stream) == b"ls\r"
    assert stream.detached


async def test_partial_detach_sequence_is_passed_through() -> None:
    stream = hijack.InputStream(_Chunks(b"a\x10b", b"\x10\x10\x11"), b"\x10\x11")
    assert await _drain(stream) == b"a\x10b\x10"
    assert stream.detached


async def test_held_prefix_is_flushed_at_eof() -> None:
    stream = hijack.InputStream(_Chunks(b"x\x10"), b"\x10\x11")
    assert await _drain(stream) == b"x\x10"
    assert not stream.detached


async def test_no_detach_keys_passes_everything() -> None:
    stream = hijack.InputStream(_Chunks(b"\x10\x11"))
    assert await _drain(stream) == b"\x10\x11"
