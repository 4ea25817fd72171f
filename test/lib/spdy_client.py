"""A small Kubernetes-style SPDY/3.1 client for tests: upgrade, then exec/attach/port-forward streams.

It plays client-go's part (remotecommand v4 and portforward.k8s.io) on top of
``pkg.streaming.spdy_conn`` in client mode, over a plain asyncio connection.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from pkg.streaming.spdy_conn import SpdyConnection, SpdyStream


class _StreamTransport:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer

    async def read(self) -> bytes:
        return await self._reader.read(65536)

    async def write(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    def write_eof(self) -> None:
        if self._writer.can_write_eof() and not self._writer.is_closing():
            self._writer.write_eof()

    def close(self) -> None:
        self._writer.close()


class UpgradeRefused(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body


@dataclass
class Client:
    conn: SpdyConnection
    protocol: str
    reader_task: asyncio.Task[None]
    writer: asyncio.StreamWriter
    headers: dict[str, str] = field(default_factory=dict)

    async def close(self) -> None:
        await self.conn.close()
        self.reader_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.reader_task
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()

    async def abort(self) -> None:
        """Drop the TCP connection without a GOAWAY, like a killed client."""
        self.writer.transport.abort()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.reader_task


async def connect(url: str, protocols: list[str], method: str = "POST") -> Client:
    parsed = urllib.parse.urlsplit(url)
    reader, writer = await asyncio.open_connection(parsed.hostname, parsed.port)
    path = parsed.path + (f"?{parsed.query}" if parsed.query else "")
    lines = [f"{method} {path} HTTP/1.1", f"Host: {parsed.netloc}", "Connection: Upgrade", "Upgrade: SPDY/3.1",
             "Content-Length: 0"]
    lines += [f"X-Stream-Protocol-Version: {p}" for p in protocols]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split()[1])
    headers = {}
    for line in header_lines:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    if status != 101:
        length = int(headers.get("content-length", "0") or 0)
        body = (await reader.readexactly(length)).decode() if length else ""
        writer.close()
        raise UpgradeRefused(status, body)
    conn = SpdyConnection(_StreamTransport(reader, writer), server=False)
    task = asyncio.create_task(conn.run(), name="spdy-client-reader")
    return Client(conn, headers.get("x-stream-protocol-version", ""), task, writer, headers)


async def read_all(stream: SpdyStream | None) -> bytes:
    if stream is None:
        return b""
    out = bytearray()
    while chunk := await stream.read():
        out += chunk
    return bytes(out)


@dataclass
class ExecSession:
    client: Client
    error: SpdyStream
    stdin: SpdyStream | None
    stdout: SpdyStream | None
    stderr: SpdyStream | None
    resize: SpdyStream | None

    async def resize_to(self, width: int, height: int) -> None:
        assert self.resize is not None
        await self.resize.write(json.dumps({"Width": width, "Height": height}).encode())

    async def status(self) -> dict[str, Any] | None:
        raw = await read_all(self.error)
        return json.loads(raw) if raw else None


async def open_exec(url: str, *, stdin: bool = False, stdout: bool = True, stderr: bool = True, tty: bool = False,
                    protocols: list[str] | None = None) -> ExecSession:
    client = await connect(url, protocols or ["v4.channel.k8s.io"])
    streams: dict[str, SpdyStream | None] = {}
    wanted = ["error", *(["stdin"] if stdin else []), *(["stdout"] if stdout else []),
              *(["stderr"] if stderr and not tty else []), *(["resize"] if tty else [])]
    for kind in wanted:
        streams[kind] = await client.conn.open_stream({"streamtype": [kind]})
    for stream in streams.values():
        assert stream is not None
        await stream.wait_reply()
    return ExecSession(client, streams["error"], streams.get("stdin"), streams.get("stdout"), streams.get("stderr"),
                       streams.get("resize"))


async def run_exec(url: str, stdin_data: bytes | None = None, **kwargs: Any
                   ) -> tuple[bytes, bytes, dict[str, Any] | None]:
    """Exec to completion: (stdout, stderr, status)."""
    session = await open_exec(url, stdin=stdin_data is not None, **kwargs)
    try:
        if session.stdin is not None:
            assert stdin_data is not None
            await session.stdin.write(stdin_data)
            await session.stdin.close()
        out, err = await asyncio.gather(read_all(session.stdout), read_all(session.stderr))
        return out, err, await session.status()
    finally:
        await session.client.close()


async def forward_once(client: Client, port: int, request_id: str, payload: bytes) -> tuple[bytes, bytes]:
    """One forwarded connection over an open portforward.k8s.io session: (reply bytes, error text)."""
    headers = {"port": [str(port)], "requestid": [request_id]}
    error = await client.conn.open_stream({"streamtype": ["error"], **headers})
    data = await client.conn.open_stream({"streamtype": ["data"], **headers})
    await error.wait_reply()
    await data.wait_reply()
    await data.write(payload)
    await data.close()
    reply, err = await asyncio.gather(read_all(data), read_all(error))
    return reply, err
