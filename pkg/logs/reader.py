"""Read (and follow) a CRI log file: the engine behind ``docker logs`` and ``crictl logs``-style output.

Records are reassembled per stream (``P`` chunks joined up to their ``F``),
filtered by stream and time, and limited to the last ``tail`` entries.  When
following, the reader polls for growth and survives rotation: once the path
names a new file (the kubelet renamed the old one and the logger reopened),
the old file is read to its end before the new one is opened.
"""
from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from pkg import errors
from pkg.logs.criformat import FULL, STREAMS, LogFormatError, decode_line

log = logging.getLogger(__name__)

_BLOCK = 256 * 1024
# A line longer than this is handed out in pieces of this size (moby's 16 KiB log chunks): a container that
# prints gigabytes without a newline never becomes one entry in memory.
MAX_JOINED = 16 * 1024


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One reassembled line: ``content`` ends with ``\\n`` unless the output stopped mid-line (``partial``)."""

    timestamp_ns: int
    stream: str
    content: bytes
    partial: bool = False


@dataclass(frozen=True)
class ReadOptions:
    follow: bool = False
    tail: int | None = None  # last N entries; None for all
    since_ns: int | None = None  # entries at or after this time
    until_ns: int | None = None  # entries at or before this time
    streams: frozenset[str] = field(default_factory=lambda: frozenset(STREAMS))
    limit_bytes: int | None = None  # stop after this many content bytes
    join_partial: bool = True  # False: each P record is its own (partial) entry, as soon as it is read (Attach)

    def __post_init__(self) -> None:
        if self.tail is not None and self.tail < 0:
            raise errors.InvalidArgument(f"tail must not be negative: {self.tail}")
        if self.limit_bytes is not None and self.limit_bytes < 0:
            raise errors.InvalidArgument(f"limit_bytes must not be negative: {self.limit_bytes}")
        unknown = set(self.streams) - set(STREAMS)
        if unknown:
            raise errors.InvalidArgument(f"unknown log streams: {sorted(unknown)}")


class _Assembler:
    """Joins P chunks per stream and applies the stream and time filters."""

    def __init__(self, options: ReadOptions) -> None:
        self.options = options
        self.pending: dict[str, tuple[int, list[bytes]]] = {}
        self.past_until = False
        self.skip: set[str] = set()  # streams whose next entry began before the read started

    def add(self, raw: bytes) -> LogEntry | None:
        try:
            line = decode_line(raw)
        except LogFormatError as err:
            log.debug("skipping malformed log line: %s", err)
            return None
        if line.stream not in self.options.streams:
            return None
        if not self.options.join_partial:
            content = line.content if line.partial else line.content + b"\n"
            return self._filter(LogEntry(line.timestamp_ns, line.stream, content, partial=line.partial))
        ts, chunks = self.pending.pop(line.stream, (line.timestamp_ns, []))
        chunks.append(line.content)
        if line.partial:
            if sum(map(len, chunks)) < MAX_JOINED:
                self.pending[line.stream] = (ts, chunks)
                return None
            if line.stream in self.skip:
                return None  # still the entry that began before the read: its pieces are skipped too
            return self._filter(LogEntry(ts, line.stream, b"".join(chunks), partial=True))
        if line.stream in self.skip:
            self.skip.discard(line.stream)
            return None
        chunks.append(b"\n")
        return self._filter(LogEntry(ts, line.stream, b"".join(chunks)))

    def flush(self) -> list[LogEntry]:
        """Entries cut short by the end of the log (the container stopped mid-line)."""
        out = []
        for stream, (ts, chunks) in sorted(self.pending.items(), key=lambda item: item[1][0]):
            if stream in self.skip:
                continue
            entry = self._filter(LogEntry(ts, stream, b"".join(chunks), partial=True))
            if entry is not None:
                out.append(entry)
        self.pending.clear()
        return out

    def _filter(self, entry: LogEntry) -> LogEntry | None:
        opts = self.options
        if opts.since_ns is not None and entry.timestamp_ns < opts.since_ns:
            return None
        if opts.until_ns is not None and entry.timestamp_ns > opts.until_ns:
            self.past_until = True
            return None
        return entry


def _lines_backward(f: BinaryIO, size: int) -> Iterator[tuple[int, bytes]]:
    """``(start offset, line)`` for the file's newline-terminated lines, last first."""
    end = size
    carry = b""  # the start of the line cut by the previous (later) block's boundary
    first = True
    while end > 0:
        start = max(0, end - _BLOCK)
        f.seek(start)
        block = f.read(end - start) + carry
        lines = block.split(b"\n")
        carry = lines.pop(0) if start > 0 else b""
        line_end = start + len(block)
        if first and lines:
            # After the last newline: an unterminated record, never a line.
            line_end -= len(lines.pop()) + 1
            first = False
        for raw in reversed(lines):
            yield line_end - len(raw), raw
            line_end -= len(raw) + 1
        end = start


def _tag(raw: bytes) -> tuple[bytes, bool] | None:
    parts = raw.split(b" ", 3)
    if len(parts) < 3:
        return None
    return parts[1], parts[2].split(b":", 1)[0] == FULL


def tail_offset(
    path: str | Path, count: int, streams: frozenset[str] = frozenset(STREAMS), size: int | None = None
) -> tuple[int, set[str]]:
    """Where the last ``count`` entries of ``streams`` (in the first ``size`` bytes) begin; a stream's unterminated
    last line is an entry, as read_log yields it.

    Blocking: run it in a thread.
    Returns the offset just after the last record not wanted, and the streams
    whose entry straddles that offset (their first records after it are the
    tail of an entry that began earlier and must be skipped).
    """
    wanted = {s.encode() for s in streams}
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END) if size is None else size
        seen = 0
        offset: int | None = size if count == 0 else None
        straddling: set[str] = set()
        decided: set[bytes] = set()
        begun: set[bytes] = set()  # streams whose last record (from the end) was passed
        for start, raw in _lines_backward(f, size):
            tag = _tag(raw)
            if tag is None or tag[0] not in wanted:
                continue
            stream, full = tag
            if offset is None:
                # An entry ends at its F record, or, for a stream's last one, at a P the stream never completed
                # (an unterminated last line: read_log hands it out as an entry, and moby's tail counts it).
                ends_entry = full or stream not in begun
                begun.add(stream)
                if ends_entry:
                    seen += 1
                    if seen > count:
                        offset = start + len(raw) + 1
                        decided.add(stream)
                continue
            # Past the offset: does each stream's last record before it end an entry?
            if stream not in decided:
                decided.add(stream)
                if not full:
                    straddling.add(stream.decode())
            if decided >= wanted:
                break
        return (0 if offset is None else offset), straddling


async def read_log(
    path: str | Path,
    options: ReadOptions | None = None,
    *,
    stop: asyncio.Event | None = None,
    poll_interval: float = 0.1,
    opened: Callable[[], None] | None = None,
) -> AsyncIterator[LogEntry]:
    """Yield the log's entries; with ``follow``, keep yielding until ``stop`` is set (or the caller stops).

    ``stop`` means the writer is done: everything it wrote before is still read (one more pass to the end
    after it is seen), never cut at an end of file read just before the last write.  ``opened`` is called
    once the file is open (or known missing without follow): from then on its removal loses nothing.
    """
    options = options or ReadOptions()
    path = Path(path)
    f: BinaryIO | None
    try:
        f = await asyncio.to_thread(open, path, "rb")
    except FileNotFoundError:
        if not options.follow:
            if opened is not None:
                opened()
            raise errors.NotFound(f"log file {path} does not exist") from None
        f = None
    if f is not None and opened is not None:
        opened()
    stopping = False  # stop was seen at an end of file: one more pass reads what was written before it
    assembler = _Assembler(options)
    remaining = options.limit_bytes
    carry = b""
    try:
        # Without follow, the log ends where it ended when we opened it: a busy container
        # must not stretch a tail or a plain read without bound.
        end_at = None if f is None or options.follow else os.fstat(f.fileno()).st_size
        if f is not None and options.tail is not None:
            offset, straddling = await asyncio.to_thread(tail_offset, path, options.tail, options.streams, end_at)
            f.seek(offset)
            assembler.skip = straddling
        while True:
            want = _BLOCK if end_at is None or f is None else min(_BLOCK, end_at - f.tell())
            block = await asyncio.to_thread(f.read, want) if f is not None and want > 0 else b""
            if block:
                lines = (carry + block).split(b"\n")
                carry = lines.pop()
                for raw in lines:
                    entry = assembler.add(raw)
                    if assembler.past_until:
                        return
                    if entry is None:
                        continue
                    if remaining is not None:
                        if remaining <= 0:
                            return
                        if len(entry.content) > remaining:
                            entry = LogEntry(entry.timestamp_ns, entry.stream, entry.content[:remaining], True)
                        remaining -= len(entry.content)
                    yield entry
                continue
            # At the end of the current file.
            if not options.follow:
                break
            rotated = await asyncio.to_thread(_rotated, path, f)
            if rotated is not None:
                if f is not None:
                    # The logger may have written to the old file between our end-of-file read and the
                    # rename it answers (kubelet renames, then asks for a reopen): read that first.
                    more = await asyncio.to_thread(f.read, 1)
                    if more:
                        f.seek(-len(more), os.SEEK_CUR)
                        rotated.close()
                        continue
                    f.close()
                f, carry = rotated, b""
                if opened is not None:
                    opened()
                continue
            if stopping:
                break
            if stop is not None and stop.is_set():
                stopping = True
                continue
            if stop is not None:
                try:
                    await asyncio.wait_for(stop.wait(), poll_interval)
                except TimeoutError:
                    pass
            else:
                await asyncio.sleep(poll_interval)
        for entry in assembler.flush():
            if remaining is not None:
                if remaining <= 0:
                    return
                entry = LogEntry(entry.timestamp_ns, entry.stream, entry.content[:remaining], True)
                remaining -= len(entry.content)
            yield entry
    finally:
        if f is not None:
            f.close()


def _rotated(path: Path, current: BinaryIO | None) -> BinaryIO | None:
    """A newly opened file when ``path`` now names a different file than ``current``, else None."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    if current is not None:
        cur = os.fstat(current.fileno())
        if (cur.st_dev, cur.st_ino) == (st.st_dev, st.st_ino):
            return None
    try:
        return open(path, "rb")
    except FileNotFoundError:
        return None
