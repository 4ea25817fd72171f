"""The CRI container log format: ``<RFC3339Nano timestamp> <stream> <P|F> <content>\\n``.

One file line per chunk of container output.  ``F`` marks the last chunk of
a line (the container's newline is dropped and the file's own newline ends
the record); ``P`` marks a partial chunk — a line longer than the logger's
maximum, or output cut short by EOF — that continues in the next record of
the same stream.  The kubelet, ``crictl logs`` and containerd all read this
format, so the rules mirror containerd's ``pkg/cri/io/logger.go``.

The shim-side logger (``pkg.logs.logger``) must start fast, so it imports
only ``pkg.logs.timestamp``, not this module (dataclasses alone cost ~50 ms).
"""
from __future__ import annotations

from dataclasses import dataclass

from pkg.logs.timestamp import LogFormatError, TimestampFormatter, format_timestamp, parse_timestamp

STDOUT = "stdout"
STDERR = "stderr"
STREAMS = (STDOUT, STDERR)
PARTIAL = b"P"
FULL = b"F"

#: containerd's default ``max_container_log_line_size`` (the logger has its own copy; a test pins them equal).
DEFAULT_MAX_LINE = 16 * 1024

__all__ = [
    "DEFAULT_MAX_LINE", "FULL", "PARTIAL", "STDERR", "STDOUT", "STREAMS", "LogFormatError", "LogLine",
    "TimestampFormatter", "decode_line", "encode_line", "format_timestamp", "parse_timestamp", "split_output",
]


@dataclass(frozen=True, slots=True)
class LogLine:
    """One record of a CRI log file."""

    timestamp_ns: int
    stream: str
    partial: bool
    content: bytes

    def encode(self) -> bytes:
        return encode_line(self.timestamp_ns, self.stream, self.content, partial=self.partial)


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
