"""The CRI log codec, the logger's record splitting and the following reader."""
from __future__ import annotations

import asyncio
import calendar
import os
import random
from pathlib import Path
from typing import BinaryIO

import pytest

from pkg import errors
from pkg.logs import criformat, reader
from pkg.logs.binary import logger_uri
from pkg.logs.criformat import LogFormatError, LogLine, decode_line, encode_line, parse_timestamp, split_output
from pkg.logs.logger import parse_args
from pkg.logs.reader import LogEntry, ReadOptions, read_log, tail_offset
from pkg.logs.writer import LogWriter, Stream

NS = 1_000_000_000
T0 = calendar.timegm((2026, 11, 27, 21, 0, 5, 0, 0, 0)) * NS + 123_456_789


def test_timestamp_is_rfc3339nano_utc_with_nine_digits() -> None:
    assert criformat.format_timestamp(T0) == b"2026-11-27T21:00:05.123456789Z"
    assert criformat.format_timestamp(T0 - 123_456_789) == b"2026-11-27T21:00:05.000000000Z"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-27T21:00:05.123456789Z", T0),
        ("2026-11-27T21:00:05.123456789+00:00", T0),
        ("2026-11-27T22:30:05.123456789+01:30", T0),
        ("2026-11-27T20:00:05.123456789-01:00", T0),
        ("2026-11-27T21:00:05.1234Z", T0 - 56_789),  # Go trims trailing zeros; any length parses
        ("2026-11-27T21:00:05Z", T0 - 123_456_789),
    ],
)
def test_parse_timestamp(text: str, expected: int) -> None:
    assert parse_timestamp(text) == expected
    assert parse_timestamp(text.encode()) == expected


@pytest.mark.parametrize("text", ["", "yesterday", "2026-11-27 21:00:05Z", "2026-11-27T21:00:05",
                                  "2026-13-27T21:00:05Z", "2026-11-27T21:00:05.Z", "2026-11-27T21:00:05.1234567891Z"])
def test_parse_timestamp_rejects_garbage(text: str) -> None:
    with pytest.raises(LogFormatError):
        parse_timestamp(text)


def test_encode_decode_round_trip() -> None:
    raw = encode_line(T0, "stderr", b"boom: a b  c", partial=True)
    assert raw == b"2026-11-27T21:00:05.123456789Z stderr P boom: a b  c\n"
    assert decode_line(raw) == LogLine(T0, "stderr", True, b"boom: a b  c")
    assert decode_line(raw).encode() == raw
    # Empty content, with and without the separating space.
    assert decode_line(b"2026-11-27T21:00:05.123456789Z stdout F ").content == b""
    assert decode_line(b"2026-11-27T21:00:05.123456789Z stdout F").content == b""
    # Extra tag flags after ':' are reserved by the format and ignored.
    assert decode_line(b"2026-11-27T21:00:05Z stdout F:x hi").content == b"hi"


@pytest.mark.parametrize("raw", [b"", b"hello", b"2026-11-27T21:00:05Z stdin F x", b"2026-11-27T21:00:05Z stdout X x",
                                 b"notatime stdout F x"])
def test_decode_rejects_malformed(raw: bytes) -> None:
    with pytest.raises(LogFormatError):
        decode_line(raw)


def test_split_output_reference() -> None:
    records, rest = split_output(b"ab\n" + b"x" * 10 + b"\n\ntail", max_line=4, final=False)
    assert records == [(False, b"ab"), (True, b"xxxx"), (True, b"xxxx"), (False, b"xx"), (False, b"")]
    assert rest == b"tail"
    records, rest = split_output(b"exactly4\n", max_line=8)
    assert records == [(False, b"exactly4")]
    records, rest = split_output(b"123456789", max_line=8)
    assert records == [(True, b"12345678"), (True, b"9")] and rest == b""


def _records(path: Path) -> list[tuple[str, bool, bytes]]:
    return [(line.stream, line.partial, line.content)
            for line in map(decode_line, path.read_bytes().split(b"\n")[:-1])]


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 64, 4096])
def test_writer_matches_reference_split_for_any_chunking(tmp_path: Path, chunk_size: int) -> None:
    """The logger's fast path gives the same records as the reference, however the pipe reads fall."""
    data = b"".join(
        b"y" * n + b"\n" for n in (0, 1, 15, 16, 17, 31, 32, 33, 100, 2, 0, 16)
    ) + b"no newline at the end"
    writer = LogWriter(str(tmp_path / "0.log"), max_line=16)
    stream = Stream(3, b"stdout")
    for i in range(0, len(data), chunk_size):
        writer.feed(stream, data[i:i + chunk_size])
    writer.feed(stream, b"", final=True)
    writer.close()
    expected, _ = split_output(data, 16, final=True)
    got = _records(tmp_path / "0.log")
    assert [(p, c) for _, p, c in got] == expected
    assert all(s == "stdout" for s, _, _ in got)


@pytest.mark.parametrize("seed", range(4))
def test_writer_matches_reference_split_for_random_output(tmp_path: Path, seed: int) -> None:
    """Random lines (empty, around max-line, far longer), random chunk sizes, P flushes of the tail in between:
    the same records as the reference in every case, and the records counter agrees with the file."""
    rng = random.Random(seed)
    for case in range(60):
        max_line = rng.choice([1, 2, 5, 16, 64])
        pieces = [rng.choice([b"a" * rng.randint(0, 2 * max_line) + b"\n", b"\n" * rng.randint(1, 3),
                              b"b" * rng.randint(0, 5 * max_line)]) for _ in range(rng.randint(1, 30))]
        data = b"".join(pieces)
        path = tmp_path / f"{case}.log"
        writer = LogWriter(str(path), max_line=max_line)
        stream = Stream(3, b"stdout")
        expected: list[tuple[bool, bytes]] = []
        pending, i = b"", 0
        while i < len(data):
            size = rng.randint(1, 4 * max_line + 8)
            final = rng.random() < 0.1  # as the 100 ms flush of an unterminated line does
            writer.feed(stream, data[i:i + size], final=final)
            records, pending = split_output(pending + data[i:i + size], max_line, final=final)
            expected += records
            i += size
        writer.feed(stream, b"", final=True)
        expected += split_output(pending, max_line, final=True)[0]
        writer.close()
        got = _records(path)
        assert [(p, c) for _, p, c in got] == expected, (seed, case)
        assert writer.records == len(got) and writer.bytes_written == path.stat().st_size


def test_writer_ordinary_output_takes_the_one_pass_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Short lines in pipe-sized chunks (a line cut at every chunk's end) never go through the general loop,
    whose copies of the chunk cost the log service a third of its CPU (docs/benchmarks.md, issue 21)."""
    def general(*_args: object) -> None:
        raise AssertionError("the general path ran for ordinary output")

    monkeypatch.setattr(LogWriter, "_feed_general", general)
    writer = LogWriter(str(tmp_path / "0.log"))
    stream = Stream(3, b"stdout")
    data = b"x" * 79 + b"\n"
    data *= 1000
    for i in range(0, len(data), 4096):
        writer.feed(stream, data[i:i + 4096])
    writer.close()
    got = _records(tmp_path / "0.log")
    assert len(got) == 1000 == writer.records and all(c == b"x" * 79 and not p for _, p, c in got)


def test_writer_keeps_carriage_returns_and_binary(tmp_path: Path) -> None:
    writer = LogWriter(str(tmp_path / "0.log"))
    stream = Stream(4, b"stderr")
    writer.feed(stream, b"tty line\r\n\x00\xff\xfe\n", final=True)
    writer.close()
    assert _records(tmp_path / "0.log") == [("stderr", False, b"tty line\r"), ("stderr", False, b"\x00\xff\xfe")]


def test_writer_creates_parents_and_discards_when_unopenable(tmp_path: Path) -> None:
    writer = LogWriter(str(tmp_path / "a" / "b" / "0.log"))
    assert (tmp_path / "a" / "b" / "0.log").exists()
    writer.close()
    (tmp_path / "file").write_text("")
    blocked = LogWriter(str(tmp_path / "file" / "0.log"))  # parent is a file: cannot open
    blocked.feed(Stream(3, b"stdout"), b"lost\n")
    assert blocked.dropped > 0


def test_logger_stays_light_and_agrees_with_the_codec() -> None:
    import subprocess
    import sys

    from pkg.logs import logger

    assert logger.DEFAULT_MAX_LINE == criformat.DEFAULT_MAX_LINE
    heavy = ("dataclasses", "asyncio", "grpc")
    probe = f"import sys, pkg.logs.logger; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "[]"


def test_parse_args_pairs_in_any_order() -> None:
    opts = parse_args(["max-line", "10", "path", "/x", "tty", "true"])
    assert opts == {"max-line": "10", "path": "/x", "tty": "true"}
    assert parse_args(["--path=/y", "--pid-file", "/p"]) == {"path": "/y", "pid-file": "/p"}


def test_logger_uri(tmp_path: Path) -> None:
    uri = logger_uri("/var/log/pods/ns_p uid/c/0.log", pid_file="/run/x/logger.pid", max_line=100, tty=True,
                     binary="/opt/bin/narwhal-logger")
    assert uri == ("binary:///opt/bin/narwhal-logger?path=/var/log/pods/ns_p%20uid/c/0.log&max-line=100"
                   "&pid-file=/run/x/logger.pid&tty=true")
    with pytest.raises(errors.InvalidArgument):
        logger_uri("relative/0.log", binary="/x")
    with pytest.raises(errors.InvalidArgument):
        logger_uri("/a.log", max_line=0, binary="/x")


def _write_log(path: Path, lines: list[tuple[int, str, bool, bytes]]) -> None:
    path.write_bytes(b"".join(encode_line(ts, s, c, partial=p) for ts, s, p, c in lines))


LINES = [
    (T0 + 1, "stdout", False, b"one"),
    (T0 + 2, "stderr", True, b"err-"),
    (T0 + 3, "stdout", True, b"tw"),
    (T0 + 4, "stdout", False, b"o"),
    (T0 + 5, "stderr", False, b"part"),
    (T0 + 6, "stdout", False, b"three"),
    (T0 + 7, "stdout", True, b"cut"),
]


async def _collect(path: Path, options: ReadOptions | None = None) -> list[LogEntry]:
    return [entry async for entry in read_log(path, options)]


async def test_reader_reassembles_partials_per_stream(tmp_path: Path) -> None:
    log = tmp_path / "0.log"
    _write_log(log, LINES)
    entries = await _collect(log)
    assert [(e.stream, e.content, e.partial) for e in entries] == [
        ("stdout", b"one\n", False),
        ("stdout", b"two\n", False),
        ("stderr", b"err-part\n", False),
        ("stdout", b"three\n", False),
        ("stdout", b"cut", True),
    ]
    assert entries[1].timestamp_ns == T0 + 3  # an entry carries its first chunk's time


async def test_reader_filters(tmp_path: Path) -> None:
    log = tmp_path / "0.log"
    _write_log(log, LINES)
    stderr_only = await _collect(log, ReadOptions(streams=frozenset({"stderr"})))
    assert [e.content for e in stderr_only] == [b"err-part\n"]
    since = await _collect(log, ReadOptions(since_ns=T0 + 3))
    assert [e.content for e in since] == [b"two\n", b"three\n", b"cut"]
    until = await _collect(log, ReadOptions(until_ns=T0 + 3))
    assert [e.content for e in until] == [b"one\n", b"two\n", b"err-part\n"]  # stops at the first later one
    limited = await _collect(log, ReadOptions(limit_bytes=6))
    assert b"".join(e.content for e in limited) == b"one\ntw"
    with pytest.raises(errors.InvalidArgument):
        ReadOptions(streams=frozenset({"stdin"}))
    with pytest.raises(errors.NotFound):
        await _collect(tmp_path / "missing.log")


async def test_reader_tail(tmp_path: Path) -> None:
    log = tmp_path / "0.log"
    _write_log(log, LINES)
    # The unterminated last line is an entry of its own (moby's tail counts it as a message).
    assert [e.content for e in await _collect(log, ReadOptions(tail=1))] == [b"cut"]
    assert [e.content for e in await _collect(log, ReadOptions(tail=2))] == [b"three\n", b"cut"]
    # The stderr entry that straddles the tail's start is skipped, not shown truncated.
    assert [e.content for e in await _collect(log, ReadOptions(tail=3))] == [b"three\n", b"cut"]
    tail4 = await _collect(log, ReadOptions(tail=4))
    assert [e.content for e in tail4] == [b"two\n", b"err-part\n", b"three\n", b"cut"]
    assert [e.content for e in await _collect(log, ReadOptions(tail=0))] == []
    assert len(await _collect(log, ReadOptions(tail=100))) == 5
    only_out = await _collect(log, ReadOptions(tail=2, streams=frozenset({"stdout"})))
    assert [e.content for e in only_out] == [b"three\n", b"cut"]
    only_err = await _collect(log, ReadOptions(tail=1, streams=frozenset({"stderr"})))
    assert [e.content for e in only_err] == [b"err-part\n"]


def test_tail_offset_across_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pkg.logs.reader as reader

    monkeypatch.setattr(reader, "_BLOCK", 50)  # lines straddle block boundaries
    log = tmp_path / "0.log"
    lines = [(T0 + i, "stdout", False, b"line %d" % i) for i in range(40)]
    _write_log(log, lines)
    data = log.read_bytes()
    for count in (1, 5, 39):
        offset, straddling = tail_offset(log, count)
        assert not straddling
        assert data[offset:].count(b"\n") == count
        assert offset == 0 or data[offset - 1:offset] == b"\n"
    assert tail_offset(log, 40)[0] == 0 and tail_offset(log, 400)[0] == 0


def _append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


async def test_reader_follows_growth_and_rotation(tmp_path: Path) -> None:
    log = tmp_path / "0.log"
    _write_log(log, LINES[:1])
    stop = asyncio.Event()
    seen: list[bytes] = []

    async def consume() -> None:
        async for entry in read_log(log, ReadOptions(follow=True), stop=stop, poll_interval=0.01):
            seen.append(entry.content)

    async def wait_for(count: int) -> None:
        async with asyncio.timeout(10):
            while len(seen) < count:
                await asyncio.sleep(0.01)

    task = asyncio.create_task(consume())
    await wait_for(1)
    _append(log, encode_line(T0 + 10, "stdout", b"gr", partial=True))
    await asyncio.sleep(0.05)
    assert seen == [b"one\n"]  # a partial waits for the rest of its line
    _append(log, encode_line(T0 + 11, "stdout", b"own"))
    await wait_for(2)
    # Rotation: the old file gets a last line after the rename, then a new file appears.
    os.rename(log, tmp_path / "0.log.1")
    _append(tmp_path / "0.log.1", encode_line(T0 + 12, "stdout", b"last in old"))
    _write_log(log, [(T0 + 13, "stdout", False, b"first in new")])
    await wait_for(4)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert seen == [b"one\n", b"grown\n", b"last in old\n", b"first in new\n"]


async def test_a_line_the_logger_wrote_to_the_old_file_after_our_last_read_is_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rotation race made certain: the rename, a last line in the old file and the new file all happen
    between the reader's end-of-file read and its look at the path (under load it happened by itself)."""
    log = tmp_path / "0.log"
    _write_log(log, LINES[:1])
    real = reader._rotated
    rotated_once = False

    def rotate_first(path: Path, current: BinaryIO | None) -> BinaryIO | None:
        nonlocal rotated_once
        if not rotated_once and current is not None and current.tell() > 0:
            rotated_once = True
            os.rename(log, tmp_path / "0.log.1")
            _append(tmp_path / "0.log.1", encode_line(T0 + 12, "stdout", b"late in old"))
            _write_log(log, [(T0 + 13, "stdout", False, b"first in new")])
        return real(path, current)

    monkeypatch.setattr(reader, "_rotated", rotate_first)
    stop = asyncio.Event()
    seen: list[bytes] = []

    async def consume() -> None:
        async for entry in read_log(log, ReadOptions(follow=True), stop=stop, poll_interval=0.01):
            seen.append(entry.content)

    task = asyncio.create_task(consume())
    async with asyncio.timeout(10):
        while len(seen) < 3:
            await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert seen == [b"one\n", b"late in old\n", b"first in new\n"]


async def test_reader_without_follow_stops_at_the_size_it_found(tmp_path: Path) -> None:
    log = tmp_path / "0.log"
    _write_log(log, LINES[:1] + [(T0 + 8, "stdout", False, b"second")])
    late = encode_line(T0 + 9, "stdout", b"written after the read began")
    entries = read_log(log, ReadOptions(tail=2))
    first = await anext(entries)
    _append(log, late)
    rest = [entry.content async for entry in entries]
    assert (first.content, rest) == (b"one\n", [b"second\n"])
    data = log.read_bytes()
    offset, _ = tail_offset(log, 1, size=len(data) - len(late))
    assert data[offset:].startswith(encode_line(T0 + 8, "stdout", b"second"))


async def test_follow_reads_what_was_written_before_stop_even_past_its_last_eof(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer's last record lands, and stop is set, between the reader's end-of-file read and its look
    at stop (a container's exit): the record is still read (issue 13: attach lost the last output)."""
    path = tmp_path / "c.log"
    path.write_bytes(encode_line(1, "stdout", b"first"))
    stop = asyncio.Event()
    real_rotated = reader._rotated

    def rotated_then_finish(p: Path, current: BinaryIO | None) -> BinaryIO | None:
        if not stop.is_set():
            with open(path, "ab") as f:
                f.write(encode_line(2, "stderr", b"last"))
            stop.set()
        return real_rotated(p, current)

    monkeypatch.setattr(reader, "_rotated", rotated_then_finish)
    opened: list[bool] = []
    entries = [e async for e in reader.read_log(path, reader.ReadOptions(follow=True), stop=stop,
                                                opened=lambda: opened.append(True))]
    assert [(e.stream, e.content) for e in entries] == [("stdout", b"first\n"), ("stderr", b"last\n")]
    assert opened == [True]
