"""pkg.containerd.ttrpc and pkg.containerd.shims against a fake ttrpc server (issue 21: exec via the shim).

The envelopes are checked against protobuf's own codec: the messages of github.com/containerd/ttrpc's types.go
(and google.rpc.Status) are declared here as a descriptor, so the hand-written encoder and decoder are compared
with an independent implementation, not with themselves.  The real shim is test/integration/test_shim_direct.py.
"""
from __future__ import annotations

import asyncio
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, empty_pb2, message_factory

from pkg import errors
from pkg.containerd import shims as shims_mod
from pkg.containerd import ttrpc
from pkg.containerd.api.runtime.v2.task import shim_pb2

F = descriptor_pb2.FieldDescriptorProto


def _messages() -> dict[str, Any]:
    proto = descriptor_pb2.FileDescriptorProto(name="ttrpc_test.proto", package="ttrpctest", syntax="proto3")

    def message(name: str, *fields: tuple[str, int, int, int, str]) -> None:
        m = proto.message_type.add(name=name)
        for fname, number, ftype, label, type_name in fields:
            f = m.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                f.type_name = type_name

    opt, rep = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    message("KeyValue", ("key", 1, F.TYPE_STRING, opt, ""), ("value", 2, F.TYPE_STRING, opt, ""))
    message("Request", ("service", 1, F.TYPE_STRING, opt, ""), ("method", 2, F.TYPE_STRING, opt, ""),
            ("payload", 3, F.TYPE_BYTES, opt, ""), ("timeout_nano", 4, F.TYPE_INT64, opt, ""),
            ("metadata", 5, F.TYPE_MESSAGE, rep, ".ttrpctest.KeyValue"))
    message("Status", ("code", 1, F.TYPE_INT32, opt, ""), ("message", 2, F.TYPE_STRING, opt, ""),
            ("details", 3, F.TYPE_BYTES, rep, ""))
    message("Response", ("status", 1, F.TYPE_MESSAGE, opt, ".ttrpctest.Status"),
            ("payload", 2, F.TYPE_BYTES, opt, ""))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"ttrpctest.{name}"))
            for name in ("Request", "Response", "Status", "KeyValue")}


PB = _messages()


def test_request_encoding_is_what_protobuf_reads() -> None:
    payload = bytes(range(256)) * 3
    body = ttrpc.encode_request("containerd.task.v2.Task", "Exec", payload, timeout_ns=2_500_000_000,
                                metadata=[("containerd-namespace-ttrpc", "k8s.io"), ("x", "é")])
    req = PB["Request"]()
    req.ParseFromString(body)
    assert (req.service, req.method, req.payload, req.timeout_nano) == (
        "containerd.task.v2.Task", "Exec", payload, 2_500_000_000)
    assert [(kv.key, kv.value) for kv in req.metadata] == [("containerd-namespace-ttrpc", "k8s.io"), ("x", "é")]
    empty = PB["Request"]()
    empty.ParseFromString(ttrpc.encode_request("s", "m", b""))
    assert (empty.service, empty.method, empty.payload, empty.timeout_nano, len(empty.metadata)) == (
        "s", "m", b"", 0, 0)


def test_response_decoding() -> None:
    ok = PB["Response"](payload=b"\x08\x2a" * 100)
    assert ttrpc.decode_response(ok.SerializeToString()) == b"\x08\x2a" * 100
    assert ttrpc.decode_response(PB["Response"]().SerializeToString()) == b""
    zero_status = PB["Response"](status=PB["Status"](code=0), payload=b"p")
    assert ttrpc.decode_response(zero_status.SerializeToString()) == b"p"
    failed = PB["Response"](status=PB["Status"](code=5, message="process abc: not found", details=[b"\x01\x02"]))
    with pytest.raises(ttrpc.TtrpcError) as info:
        ttrpc.decode_response(failed.SerializeToString())
    assert (info.value.code, info.value.message) == (5, "process abc: not found")
    for bad in (b"\x12\x05ab", b"\x12", b"\x0b"):  # a cut field, a cut length, a group (wire type 3)
        with pytest.raises(ValueError):
            ttrpc.decode_response(bad)


Handler = Callable[[Any, int, asyncio.StreamWriter], Awaitable[None]]


class FakeServer:
    """A ttrpc server on a unix socket: each request is handed to ``handler(request, stream id, writer)``."""

    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = path
        self.handler = handler
        self.requests: list[Any] = []
        self.server: asyncio.AbstractServer | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> FakeServer:
        self.server = await asyncio.start_unix_server(self._serve, str(self.path))
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        for w in self.writers:
            w.close()
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        try:
            while True:
                length, stream, kind, _ = ttrpc.HEADER.unpack(await reader.readexactly(10))
                req = PB["Request"]()
                req.ParseFromString(await reader.readexactly(length))
                assert kind == ttrpc.TYPE_REQUEST and stream % 2 == 1
                self.requests.append(req)
                asyncio.create_task(self.handler(req, stream, writer))
        except asyncio.IncompleteReadError:
            pass


def answer(writer: asyncio.StreamWriter, stream: int, payload: bytes = b"", code: int = 0, message: str = "") -> None:
    resp = PB["Response"](payload=payload)
    if code:
        resp.status.CopyFrom(PB["Status"](code=code, message=message))
    body = resp.SerializeToString()
    writer.write(ttrpc.HEADER.pack(len(body), stream, ttrpc.TYPE_RESPONSE, 0) + body)


async def test_calls_are_multiplexed_and_answered_out_of_order(tmp_path: Path) -> None:
    release = asyncio.Event()

    async def handler(req: Any, stream: int, writer: asyncio.StreamWriter) -> None:
        if req.method == "Slow":
            await release.wait()
        answer(writer, stream, req.method.encode() + req.payload)
        if req.method == "Fast":
            release.set()

    async with FakeServer(tmp_path / "s", handler) as server:
        conn = await ttrpc.Connection.open(str(tmp_path / "s"))
        slow = asyncio.create_task(conn.call("svc", "Slow", b"1", metadata=[("k", "v")]))
        await asyncio.sleep(0)
        assert await conn.call("svc", "Fast", b"2") == b"Fast2"
        assert await slow == b"Slow1"
        assert [r.method for r in server.requests] == ["Slow", "Fast"]
        assert [(kv.key, kv.value) for kv in server.requests[0].metadata] == [("k", "v")]
        await conn.close()
        with pytest.raises(ttrpc.ConnectionLost):
            await conn.call("svc", "Fast", b"")


async def test_error_status_timeout_and_a_late_answer(tmp_path: Path) -> None:
    gave_up, late_sent = asyncio.Event(), asyncio.Event()

    async def handler(req: Any, stream: int, writer: asyncio.StreamWriter) -> None:
        if req.method == "Missing":
            answer(writer, stream, code=5, message="exec xyz: not found")
        elif req.method == "Late":
            await gave_up.wait()
            answer(writer, stream, b"late")  # after the caller gave up: dropped
            late_sent.set()
        else:
            answer(writer, stream, b"ok")

    async with FakeServer(tmp_path / "s", handler) as server:
        conn = await ttrpc.Connection.open(str(tmp_path / "s"))
        with pytest.raises(ttrpc.TtrpcError) as info:
            await conn.call("svc", "Missing", b"")
        assert info.value.code == 5
        with pytest.raises(TimeoutError):
            await conn.call("svc", "Late", b"", timeout=0.05)
        assert server.requests[-1].timeout_nano == 50_000_000
        gave_up.set()
        await late_sent.wait()  # the late answer is on the wire before Other is asked: read first, and dropped
        assert await conn.call("svc", "Other", b"") == b"ok"
        assert not conn.closed
        await conn.close()


async def test_a_server_that_hangs_up_fails_every_pending_call(tmp_path: Path) -> None:
    hanging = asyncio.Event()

    async def handler(req: Any, stream: int, writer: asyncio.StreamWriter) -> None:
        if req.method == "Hang":
            hanging.set()
        elif req.method == "Die":
            writer.close()

    async with FakeServer(tmp_path / "s", handler):
        conn = await ttrpc.Connection.open(str(tmp_path / "s"))
        pending = asyncio.create_task(conn.call("svc", "Hang", b""))
        await hanging.wait()
        with pytest.raises(ttrpc.ConnectionLost):
            await conn.call("svc", "Die", b"")
        with pytest.raises(ttrpc.ConnectionLost):
            await pending
        assert conn.closed


async def test_an_oversized_answer_closes_the_connection(tmp_path: Path) -> None:
    async def handler(req: Any, stream: int, writer: asyncio.StreamWriter) -> None:
        writer.write(struct.pack(">IIBB", ttrpc.MAX_MESSAGE + 1, stream, ttrpc.TYPE_RESPONSE, 0))

    async with FakeServer(tmp_path / "s", handler):
        conn = await ttrpc.Connection.open(str(tmp_path / "s"))
        with pytest.raises(ttrpc.ConnectionLost, match="over the limit"):
            await conn.call("svc", "Big", b"")


def _bundle(state: Path, namespace: str, container_id: str, address: str) -> None:
    bundle = state / shims_mod.TASK_DIR / namespace / container_id
    bundle.mkdir(parents=True)
    (bundle / "address").write_text(address)


async def test_shim_tasks_reach_the_bundles_shim_and_translate_its_errors(tmp_path: Path) -> None:
    async def handler(req: Any, stream: int, writer: asyncio.StreamWriter) -> None:
        if req.method == "State":  # not a ttrpc Response: a field 2 of the wrong wire type
            body = b"\x10\x01"
            writer.write(ttrpc.HEADER.pack(len(body), stream, ttrpc.TYPE_RESPONSE, 0) + body)
        elif req.method == "Pids":  # a Response whose payload is not a PidsResponse
            answer(writer, stream, b"\x0a\x05ab")
        elif req.method == "Start":
            start = shim_pb2.StartRequest()
            start.ParseFromString(req.payload)
            if start.exec_id == "gone":
                answer(writer, stream, code=5, message=f"process {start.exec_id} does not exist")
            else:
                answer(writer, stream, shim_pb2.StartResponse(pid=4242).SerializeToString())
        else:
            answer(writer, stream, empty_pb2.Empty().SerializeToString())

    shim_tasks = shims_mod.ShimTasks(tmp_path / "state", "narwhal")
    sock = tmp_path / "shim.sock"
    _bundle(tmp_path / "state", "narwhal", "c1", f"unix://{sock}\n")
    _bundle(tmp_path / "state", "narwhal", "c2", f"unix://{sock}")  # the group's second task: same shim
    _bundle(tmp_path / "state", "narwhal", "dead", f"unix://{tmp_path / 'nobody.sock'}")
    _bundle(tmp_path / "state", "narwhal", "abstract", "unix://@containerd-shim/x.sock")
    async with FakeServer(sock, handler) as server:
        start, _ = await asyncio.gather(  # at once, before any connection: still one connection per shim
            shim_tasks.call("c1", "Start", shim_pb2.StartRequest(id="c1", exec_id="e1"), shim_pb2.StartResponse,
                            what="exec in c1"),
            shim_tasks.call("c2", "Kill", shim_pb2.KillRequest(id="c2", exec_id="e2", signal=9), empty_pb2.Empty,
                            what="kill"))
        assert start.pid == 4242
        assert len(server.writers) == 1
        assert sorted((r.service, r.method) for r in server.requests) == [
            ("containerd.task.v2.Task", "Kill"), ("containerd.task.v2.Task", "Start")]
        assert all([(kv.key, kv.value) for kv in r.metadata] == [("containerd-namespace-ttrpc", "narwhal")]
                   for r in server.requests)
        [kill_request] = [r for r in server.requests if r.method == "Kill"]
        kill = shim_pb2.KillRequest()
        kill.ParseFromString(kill_request.payload)
        assert (kill.id, kill.exec_id, kill.signal) == ("c2", "e2", 9)
        with pytest.raises(errors.NotFound, match="^exec in c1: process gone does not exist$"):
            await shim_tasks.call("c1", "Start", shim_pb2.StartRequest(id="c1", exec_id="gone"),
                                  shim_pb2.StartResponse, what="exec in c1")
        with pytest.raises(errors.Internal, match="answered something else than ttrpc"):
            await shim_tasks.call("c1", "State", shim_pb2.StateRequest(id="c1"), shim_pb2.StateResponse, what="x")
        with pytest.raises(errors.Internal, match="Pids answer is not a PidsResponse"):
            await shim_tasks.call("c1", "Pids", shim_pb2.PidsRequest(id="c1"), shim_pb2.PidsResponse, what="x")
        for unreachable in ("no-such-task", "dead", "abstract", "../c1", ""):
            with pytest.raises(shims_mod.Unreachable):
                await shim_tasks.call(unreachable, "Start", shim_pb2.StartRequest(), shim_pb2.StartResponse, what="x")
        await shim_tasks.close()
