"""The sans-I/O pieces of streaming: statuses, resize decoding, channel framing, attach fan-out and relay."""
from __future__ import annotations

import asyncio
import json

import pytest
from lib.fake_streaming import FakeStdio

from pkg import errors
from pkg.streaming import remotecommand as rc
from pkg.streaming import websocket as ws
from pkg.streaming.attach import OutputBroadcaster, relay_attach
from pkg.streaming.backend import ExecStreams
from pkg.streaming.model import TerminalSize
from pkg.streaming.portforward import request_id
from pkg.streaming.server import negotiate


def test_exit_code_status_is_what_client_go_decodes() -> None:
    status = json.loads(rc.encode_status(rc.exit_code_status(42, ("false",)), rc.V4))
    assert status["status"] == "Failure" and status["reason"] == "NonZeroExitCode"
    assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "42"}]
    assert rc.encode_status(rc.success_status(), rc.V4) == b'{"metadata":{},"status":"Success"}'
    assert rc.encode_status(rc.success_status(), rc.V3) == b""
    assert rc.encode_status(rc.exit_code_status(1), rc.V2).startswith(b"command terminated")


def test_resize_decoder_handles_split_and_concatenated_objects() -> None:
    dec = rc.ResizeDecoder()
    assert dec.feed(b'{"Width":80,"Hei') == []
    assert dec.feed(b'ght":24}{"Width":100,"Height":50}\n{"width":1,') == [TerminalSize(80, 24),
                                                                          TerminalSize(100, 50)]
    assert dec.feed(b'"height":2}') == [TerminalSize(1, 2)]
    assert dec.feed(b'{"Width":-1,"Height":5}') == []  # ignored, not fatal
    with pytest.raises(errors.InvalidArgument):
        dec.feed(b"[" * 5000)


def test_channel_frames() -> None:
    assert ws.encode_frame(1, b"hi", b64=False) == b"\x01hi"
    assert ws.encode_frame(2, b"hi", b64=True) == "2aGk="
    assert ws.decode_frame("0aGk=", b64=True) == (0, b"hi")
    assert ws.decode_frame(b"\x04{}", b64=False) == (4, b"{}")
    for bad in ("", "xaGk=", "0!!!"):
        with pytest.raises(errors.InvalidArgument):
            ws.decode_frame(bad, b64=True)
    with pytest.raises(errors.InvalidArgument):
        ws.decode_frame(b"", b64=False)


def test_protocol_negotiation_follows_client_order() -> None:
    assert negotiate(["v2.channel.k8s.io, v4.channel.k8s.io"], rc.SPDY_PROTOCOLS) == "v2.channel.k8s.io"
    assert negotiate(["nope"], rc.SPDY_PROTOCOLS) is None


class _Stream:
    def __init__(self, stream_id: int, headers: dict[str, str]) -> None:
        self.id = stream_id
        self._headers = headers

    def header(self, name: str) -> str:
        return self._headers.get(name, "")


def test_port_forward_request_ids_for_old_clients() -> None:
    assert request_id(_Stream(5, {"streamtype": "data", "requestid": "abc"})) == "abc"  # type: ignore[arg-type]
    # no requestid header: error stream id N pairs with data stream id N+2
    assert request_id(_Stream(1, {"streamtype": "error"})) == "1"  # type: ignore[arg-type]
    assert request_id(_Stream(3, {"streamtype": "data"})) == "1"  # type: ignore[arg-type]


async def test_broadcaster_fans_out_and_cuts_off_slow_subscribers() -> None:
    hub = OutputBroadcaster(subscriber_buffer=10)
    fast, slow = hub.subscribe(), hub.subscribe()
    hub.publish("stdout", b"12345")
    assert await fast.read() == ("stdout", b"12345")
    hub.publish("stderr", b"678901")  # slow now holds 11 bytes > 10: cut off
    assert await fast.read() == ("stderr", b"678901")
    assert await slow.read() == ("stdout", b"12345")
    assert await slow.read() is None
    hub.end()
    assert await fast.read() is None
    assert await hub.subscribe().read() is None  # after the container's output ended


class _Sink:
    def __init__(self) -> None:
        self.data = bytearray()

    async def write(self, data: bytes) -> None:
        self.data += data


class _Source:
    def __init__(self, *chunks: bytes) -> None:
        self._chunks = list(chunks)

    async def read(self) -> bytes:
        return self._chunks.pop(0) if self._chunks else b""


@pytest.mark.parametrize("stdin_once, tty", [(False, False), (True, True)])
async def test_client_stdin_eof_detaches_unless_stdin_once_without_tty(stdin_once: bool, tty: bool) -> None:
    stdio = FakeStdio(stdin_once=stdin_once, tty=tty)
    out = _Sink()
    await relay_attach(stdio, ExecStreams(tty=tty, stdin=_Source(b"x"), stdout=out))
    assert not stdio.stdin_closed  # the container keeps its stdin (and runs on)
    assert not stdio.broadcaster._subscribers


async def test_stdin_once_closes_the_container_stdin_and_relays_until_exit() -> None:
    stdio = FakeStdio(stdin_once=True)
    out = _Sink()
    await relay_attach(stdio, ExecStreams(tty=False, stdin=_Source(b"x"), stdout=out))
    assert stdio.stdin_closed and bytes(out.data) == b"x"  # stderr was not requested: dropped


async def test_relay_ends_when_the_client_goes_away() -> None:
    class Gone:
        async def write(self, data: bytes) -> None:
            raise ConnectionResetError

    stdio = FakeStdio()
    relay = asyncio.create_task(relay_attach(stdio, ExecStreams(tty=False, stdout=Gone())))
    await asyncio.sleep(0)
    stdio.broadcaster.publish("stdout", b"data")
    await relay
    assert not stdio.broadcaster._subscribers  # the subscription was released
