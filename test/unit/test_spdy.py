"""SPDY/3.1 framing: every frame type round-trips, header compression keeps one context, bad input is refused."""
from __future__ import annotations

import struct
import zlib

import pytest

from pkg.streaming import spdy


def test_dictionary_is_the_spdy3_one() -> None:
    # 1423 bytes; zlib's dictionary id (Adler-32) is what a peer checks before inflating.
    assert len(spdy.DICTIONARY) == 1423
    assert zlib.adler32(spdy.DICTIONARY) == 0xE3C6A7C2
    assert spdy.DICTIONARY.startswith(b"\x00\x00\x00\x07options\x00\x00\x00\x04head")
    assert spdy.DICTIONARY.endswith(b"utf-,*,enq=0.")


FRAMES: list[spdy.Frame] = [
    spdy.DataFrame(1, b"hello", spdy.FLAG_FIN),
    spdy.DataFrame(3, b""),
    spdy.SynStream(5, {"streamtype": ["stdout"], "port": ["80"]}, spdy.FLAG_FIN, associated_id=0, priority=3),
    spdy.SynReply(5, {"x": ["a", "b"]}),
    spdy.HeadersFrame(5, {"k": ["v"]}, spdy.FLAG_FIN),
    spdy.RstStream(7, spdy.CANCEL),
    spdy.Settings({spdy.SETTINGS_INITIAL_WINDOW_SIZE: 1 << 20, 4: 100}),
    spdy.Ping(9),
    spdy.GoAway(11, spdy.GOAWAY_OK),
    spdy.WindowUpdate(0, 4096),
    spdy.WindowUpdate(13, 1),
]


def test_every_frame_round_trips_even_fed_byte_by_byte() -> None:
    encoder, parser = spdy.Encoder(), spdy.Parser()
    wire = b"".join(encoder.encode(f) for f in FRAMES)
    parsed: list[spdy.Frame] = []
    for i in range(len(wire)):
        parsed += parser.feed(wire[i:i + 1])
    assert parsed == FRAMES


def test_header_compression_shares_one_context_per_direction() -> None:
    encoder, parser = spdy.Encoder(), spdy.Parser()
    first = encoder.encode(spdy.SynStream(1, {"streamtype": ["error"]}))
    second = encoder.encode(spdy.SynStream(3, {"streamtype": ["error"]}))
    assert len(second) < len(first)  # the second block refers back to the first
    assert parser.feed(first + second) == [spdy.SynStream(1, {"streamtype": ["error"]}),
                                           spdy.SynStream(3, {"streamtype": ["error"]})]
    with pytest.raises(spdy.ProtocolError):
        spdy.Parser().feed(second)  # a fresh parser lacks the context


def test_control_frame_layout_matches_the_draft() -> None:
    raw = spdy.Encoder().encode(spdy.RstStream(5, spdy.CANCEL))
    assert raw == struct.pack("!HHBBHII", 0x8003, spdy.RST_STREAM, 0, 0, 8, 5, spdy.CANCEL)
    data = spdy.Encoder().encode(spdy.DataFrame(0x7FFFFFFF, b"xy", spdy.FLAG_FIN))
    assert data == bytes.fromhex("7fffffff01000002") + b"xy"


def test_unknown_control_frames_are_skipped() -> None:
    unknown = struct.pack("!HHBBH", 0x8003, 0x00FF, 0, 0, 4) + b"abcd"
    ping = spdy.Encoder().encode(spdy.Ping(2))
    assert spdy.Parser().feed(unknown + ping) == [spdy.Ping(2)]


def _control(kind: int, payload: bytes, version: int = 3) -> bytes:
    return struct.pack("!IB", 0x80000000 | (version << 16) | kind, 0) + len(payload).to_bytes(3, "big") + payload


@pytest.mark.parametrize("wire", [
    _control(spdy.PING, b"\0\0\0\1", version=2),                      # wrong version
    _control(spdy.WINDOW_UPDATE, struct.pack("!II", 1, 0)),          # zero delta
    _control(spdy.RST_STREAM, b"\0\0"),                              # too short
    _control(spdy.SETTINGS, struct.pack("!I", 5)),                   # entry count lies
    _control(spdy.SYN_STREAM, struct.pack("!IIBB", 1, 0, 0, 0) + b"not zlib at all"),
    bytes.fromhex("0000000000000001") + b"x",                          # data on stream 0
], ids=["version", "zero-delta", "short", "settings-count", "bad-zlib", "stream-0"])
def test_protocol_errors(wire: bytes) -> None:
    with pytest.raises(spdy.ProtocolError):
        spdy.Parser().feed(wire)


def test_oversized_frame_is_refused_before_buffering() -> None:
    parser = spdy.Parser(max_payload=1024)
    with pytest.raises(spdy.ProtocolError, match="exceeds"):
        parser.feed(bytes.fromhex("00000001") + b"\x00" + (4096).to_bytes(3, "big"))


def test_header_block_rules() -> None:
    block = spdy.encode_header_block({"Port": ["80"], "multi": ["a", "b"]})
    assert spdy.decode_header_block(block) == {"port": ["80"], "multi": ["a", "b"]}
    upper = struct.pack("!II", 1, 1) + b"A" + struct.pack("!I", 0)
    with pytest.raises(spdy.ProtocolError, match="lower-case"):
        spdy.decode_header_block(upper)
    dup = struct.pack("!II", 2, 1) + b"a" + struct.pack("!I", 0) + struct.pack("!I", 1) + b"a" + struct.pack("!I", 0)
    with pytest.raises(spdy.ProtocolError, match="duplicate"):
        spdy.decode_header_block(dup)
    with pytest.raises(spdy.ProtocolError, match="truncated"):
        spdy.decode_header_block(struct.pack("!I", 3))


def test_header_bomb_is_refused() -> None:
    encoder = spdy.Encoder()
    frame = encoder.encode(spdy.SynStream(1, {"x": ["a" * 200_000]}))
    with pytest.raises(spdy.ProtocolError, match="too large"):
        spdy.Parser(max_header_block=64 * 1024).feed(frame)
