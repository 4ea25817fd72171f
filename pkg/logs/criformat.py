"""The CRI container log format: ``<RFC3339Nano timestamp> <stream> <P|F> <content>\\n``.

One file line per chunk of container output.  ``F`` marks the last chunk of
a line (the container's newline is dropped and the file's own newline ends
the record); ``P`` marks a partial chunk — a line longer than the logger's
maximum, or output cut short by EOF — that continues in the next record of
the same stream.  The kubelet, ``crictl logs`` and containerd all read this
format, so the rules mirror containerd's ``pkg/cri/io/logger.go``.

This module stays import-light: the shim-side logger (``pkg.logs.logger``)
uses the encoder and must start fast.
"""
from __future__ import annotations

import calendar
import time
from dataclasses import dataclass

STDOUT = "stdout"
STDERR = "stderr"
STREAMS = (STDOUT, STDERR)
PARTIAL = b"P"
FULL = b"F"

#: containerd's default ``max_container_log_line_size``.
DEFAULT_MAX_LINE = 16 * 1024


class LogFormatError(ValueError):
    """A line that is not in the CRI log format."""


@dataclass(frozen=True, slots=True)
class LogLine:
    """One record of a CRI log file."""

    timestamp_ns: int
    stream: str
    partial: bool
    content: bytes

    def encode(self) -> bytes:
        return encode_line(self.timestamp_ns, self.stream, self.content, partial=self.partial)


class TimestampFormatter:
    """Formats nanosecond times as RFC3339Nano in UTC, caching the per-second prefix.

    Fixed nine fraction digits (Go's parser, the kubelet's included, accepts
    any fraction length; fixed width keeps files sortable as text).
    """

    __slots__ = ("_second", "_prefix")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = b""

    def format(self, ns: int) -> bytes:
        second, frac = divmod(ns, 1_000_000_000)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second)).encode()
        return b"%s%09dZ" % (self._prefix, frac)


_formatter = TimestampFormatter()


def format_timestamp(ns: int) -> bytes:
    return _formatter.format(ns)


def parse_timestamp(value: bytes | str) -> int:
    """Parse an RFC3339 / RFC3339Nano timestamp (any fraction length, ``Z`` or ``±hh:mm``) to ns."""
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    try:
        if len(text) < 20 or text[4] != "-" or text[7] != "-" or text[10] not in "Tt" or text[13] != ":" \
                or text[16] != ":":
            raise ValueError
        year, month, day = int(text[0:4]), int(text[5:7]), int(text[8:10])
        hour, minute, sec = int(text[11:13]), int(text[14:16]), int(text[17:19])
        rest = text[19:]
        frac_ns = 0
        if rest.startswith("."):
            end = 1
            while end < len(rest) and rest[end].isdigit():
                end += 1
            digits = rest[1:end]
            if not digits or len(digits) > 9:
                raise ValueError
            frac_ns = int(digits.ljust(9, "0"))
            rest = rest[end:]
        if rest in ("Z", "z"):
            offset = 0
        elif len(rest) == 6 and rest[0] in "+-" and rest[3] == ":":
            offset = (int(rest[1:3]) * 3600 + int(rest[4:6]) * 60) * (1 if rest[0] == "+" else -1)
        else:
            raise ValueError
        if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and sec < 61):
            raise ValueError
        seconds = calendar.timegm((year, month, day, hour, minute, sec, 0, 0, 0)) - offset
    except (ValueError, IndexError):
        raise LogFormatError(f"invalid RFC3339 timestamp {text!r}") from None
    return seconds * 1_000_000_000 + frac_ns


def encode_line(timestamp_ns: int, stream: str, content: bytes, *, partial: bool = False) -> bytes:
    """One record; ``content`` must not contain a newline."""
    if stream not in STREAMS:
        raise ValueError(f"unknown stream {stream!r}")
    return b"%s %s %s %s\n" % (format_timestamp(timestamp_ns), stream.encode(), PARTIAL if partial else FULL, content)


def split_output(
    data: bytes, max_line: int = DEFAULT_MAX_LINE, *, final: bool = True
) -> tuple[list[tuple[bool, bytes]], bytes]:
    """Split raw output into ``(partial, content)`` records as the logger does.

    Lines longer than ``max_line`` become ``P`` chunks of ``max_line`` bytes;
    an unterminated tail is returned as the remainder, or emitted as ``P``
    when ``final``.  The reference implementation for tests and tools; the
    logger runs an equivalent, faster loop.
    """
    records: list[tuple[bool, bytes]] = []
    start = 0
    while start < len(data):
        newline = data.find(b"\n", start)
        end = len(data) if newline < 0 else newline
        while end - start > max_line:
            records.append((True, data[start:start + max_line]))
            start += max_line
        if newline < 0:
            if final and start < len(data):
                records.append((True, data[start:]))
                start = len(data)
            break
        records.append((False, data[start:newline]))
        start = newline + 1
    return records, data[start:]


def decode_line(raw: bytes) -> LogLine:
    """Parse one record (with or without its trailing newline)."""
    if raw.endswith(b"\n"):
        raw = raw[:-1]
    first = raw.find(b" ")
    second = raw.find(b" ", first + 1) if first > 0 else -1
    if second < 0:
        raise LogFormatError(f"not a CRI log line: {raw[:80]!r}")
    stream = raw[first + 1:second].decode("ascii", "replace")
    if stream not in STREAMS:
        raise LogFormatError(f"unknown stream {stream!r} in log line {raw[:80]!r}")
    timestamp = parse_timestamp(raw[:first])
    tag_end = raw.find(b" ", second + 1)
    if tag_end < 0:
        # "<ts> <stream> F" with empty content and no trailing space is accepted too.
        tag, content = raw[second + 1:], b""
    else:
        tag, content = raw[second + 1:tag_end], raw[tag_end + 1:]
    # Tags may carry more flags separated by ':' (the format reserves them); the first is P or F.
    flag = tag.split(b":", 1)[0]
    if flag not in (PARTIAL, FULL):
        raise LogFormatError(f"unknown tag {tag!r} in log line {raw[:80]!r}")
    return LogLine(timestamp, stream, flag == PARTIAL, content)
