"""The CRI log writer shared by narwhal-logger (one process per container) and narwhal-log-service (one per
daemon): output chunks -> CRI records (``<RFC3339Nano> <stream> <P|F> <content>``, lines over ``max_line`` split
into P records), appended with writev, Docker's max-size/max-file rotation (optionally gzipped) and ReopenContainerLog,
and the byte/record totals narwhald's metrics read from the stats file.

Both processes are children of neither narwhald nor the pod (the shim's, or a service of their own), so this module
keeps to the standard library: every import is on StartContainer's path when the shim runs the logger.
"""
from __future__ import annotations

import errno
import fcntl
import os
import sys
import time

from pkg.logs.timestamp import TimestampFormatter

READ_SIZE = 256 << 10
DEFAULT_MAX_LINE = 16 * 1024  # containerd's max_container_log_line_size (= criformat.DEFAULT_MAX_LINE)
PIPE_SIZE = 1 << 20
# An unterminated line (a shell prompt, `echo -n`) is written as a P record once the stream has been
# quiet this long, so log followers (Attach, `logs -f`) see it; the rest of the line follows later.
PARTIAL_FLUSH_AFTER = 0.1
F_SETPIPE_SZ = 1031
# Totals of bytes and records written go to ``<pid-file>.stats`` for narwhald's metrics (read_stats_file).
STATS_SUFFIX = ".stats"
STATS_INTERVAL = 1.0
_IOV_BATCH = 512  # well below IOV_MAX (1024)


class Stream:
    """Per-stream state: the unterminated tail and the record prefixes."""

    __slots__ = ("fd", "name", "pending", "pending_since")

    def __init__(self, fd: int, name: bytes) -> None:
        self.fd = fd
        self.name = name
        self.pending = b""
        self.pending_since: float | None = None  # monotonic time the unterminated tail started waiting


class LogWriter:
    """Encodes output chunks into CRI records and appends them to the log file."""

    def __init__(self, path: str, max_line: int = DEFAULT_MAX_LINE, stats_path: str = "", *,
                 max_size: int = 0, max_files: int = 1, compress: bool = False) -> None:
        if max_line <= 0:
            raise ValueError("max-line must be positive")
        if max_size < 0 or max_files < 1:
            raise ValueError("max-size must not be negative and max-file must be at least 1")
        self.path = path
        self.max_line = max_line
        self.max_size = max_size  # 0: never rotate
        self.max_files = max_files
        self.compress = compress
        self.size = 0  # of the current file
        self.fd = -1
        self.dropped = 0
        # Totals for narwhald's metrics, written to stats_path at most every STATS_INTERVAL and at close.
        self.bytes_written = 0
        self.records = 0
        self._stats_path = stats_path
        self._stats_at = 0.0
        self._ts = TimestampFormatter()
        self.open()

    def open(self) -> None:
        """(Re)open the log file; on failure output is discarded until the next reopen."""
        old, self.fd = self.fd, -1
        try:
            parent = os.path.dirname(self.path)
            if parent:
                os.makedirs(parent, exist_ok=True)
            self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
            self.size = os.fstat(self.fd).st_size
        except OSError as err:
            warn(f"cannot open log file {self.path}: {err}")
        if old >= 0:
            os.close(old)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self.report()

    def report(self) -> None:
        """``<bytes> <records>`` into the stats file, replaced atomically (read by narwhald's metrics)."""
        if not self._stats_path:
            return
        self._stats_at = time.monotonic()
        tmp = f"{self._stats_path}.tmp"
        try:
            with open(tmp, "w") as f:
                f.write(f"{self.bytes_written} {self.records}\n")
            os.replace(tmp, self._stats_path)
        except OSError:
            pass  # metrics only: never disturb the log copy

    def feed(self, stream: Stream, chunk: bytes, *, final: bool = False) -> None:
        """Encode ``chunk`` (appended to the stream's pending tail) and write every complete record."""
        prefix = b"%s %s " % (self._ts.format(time.time_ns()), stream.name)
        full = prefix + b"F "
        out: list[bytes | memoryview] = []
        if not self._feed_lines(stream, chunk, full, out):
            self._feed_general(stream, chunk, full, prefix + b"P ", out)
        if final and stream.pending:
            out.append(prefix + b"P " + stream.pending + b"\n")
            self.records += 1
            stream.pending = b""
        if out:
            self._write(out)

    def _feed_lines(self, stream: Stream, chunk: bytes, full: bytes, out: list[bytes | memoryview]) -> bool:
        """The common case, in one pass over ``chunk`` and no copy of it: ``chunk`` ends at least one line,
        and neither a line (the pending tail's included) nor the new unterminated tail is longer than
        max_line.  False, having done nothing, otherwise.

        The records are ``full``, the pending tail, then ``chunk`` with every newline turned into "newline +
        next prefix" by one replace(); a view cuts off the prefix after the last newline and the new tail.
        The number of records is what the replace() added over the prefix's length (no count() pass)."""
        max_line, n, pending = self.max_line, len(chunk), stream.pending
        end, limit = 0, max_line + 1 - len(pending)  # the first line continues the pending tail
        while end < n:
            nl = chunk.rfind(b"\n", end, min(end + limit, n))
            if nl < 0:
                break
            end, limit = nl + 1, max_line + 1
        if end == 0 or n - end > max_line:
            return False
        encoded = chunk.replace(b"\n", b"\n" + full)
        out.append(full)
        if pending:
            out.append(pending)
        out.append(memoryview(encoded)[: len(encoded) - len(full) - (n - end)])
        self.records += (len(encoded) - n) // len(full)
        stream.pending = chunk[end:]
        return True

    def _feed_general(self, stream: Stream, chunk: bytes, full: bytes, part: bytes,
                      out: list[bytes | memoryview]) -> None:
        """Any chunk: lines longer than max_line become ``P`` records of max_line bytes."""
        data = stream.pending + chunk if stream.pending else chunk
        max_line, n, start = self.max_line, len(data), 0
        while True:
            # Jump over a run of complete lines, each at most max_line long, one
            # window search per max_line bytes: a C-speed pass for ordinary output.
            end = start
            while end < n:
                nl = data.rfind(b"\n", end, min(end + max_line + 1, n))
                if nl < 0:
                    break
                end = nl + 1
            if end > start:
                # One replace() turns every newline into "newline + next prefix"; the
                # prefix after the last newline is cut off by a view, not a copy.
                run = data if start == 0 and end == n else data[start:end]
                out.append(full)
                encoded = run.replace(b"\n", b"\n" + full)
                out.append(memoryview(encoded)[: -len(full)])
                self.records += (len(encoded) - len(run)) // len(full)
                start = end
            if n - start > max_line:
                out.append(part + data[start:start + max_line] + b"\n")
                self.records += 1
                start += max_line
                continue
            break
        stream.pending = data[start:]

    def rotate(self) -> None:
        """Start a new file: the current one becomes ``path.1`` (gzipped to ``path.1.gz`` with compress), older
        ones move up one number and the one past ``max-file`` goes, as Docker's json-file and local drivers.
        Renames, never a truncate: a reader following the old file reads it to its end, then finds the new
        one (pkg.logs.reader)."""
        ext = ".gz" if self.compress else ""
        try:
            if self.max_files < 2:
                os.unlink(self.path)
            else:
                for n in range(self.max_files - 1, 1, -1):
                    if os.path.exists(f"{self.path}.{n - 1}{ext}"):
                        os.replace(f"{self.path}.{n - 1}{ext}", f"{self.path}.{n}{ext}")
                os.replace(self.path, f"{self.path}.1")
        except OSError as err:
            warn(f"rotating {self.path} failed: {err}")
        self.open()
        if self.compress and self.max_files >= 2:
            _gzip(f"{self.path}.1")

    def _write(self, parts: list[bytes | memoryview]) -> None:
        if not self.max_size or self.fd < 0:
            self._append(parts)
            return
        # Rotation: whole records only, and no file grows past max-size unless one record alone does.
        data = b"".join(parts)
        while data:
            room = self.max_size - self.size
            if len(data) <= room:
                self._append([data])
                return
            cut = data.rfind(b"\n", 0, max(room, 0)) + 1
            if cut == 0 and self.size:
                self.rotate()
                continue
            if cut == 0:
                cut = data.find(b"\n") + 1 or len(data)
            self._append([data[:cut]])
            data = data[cut:]
            if data:
                self.rotate()

    def _append(self, parts: list[bytes | memoryview]) -> None:
        if self.fd < 0:
            self.dropped += sum(len(p) for p in parts)
            return
        while parts:
            batch, parts = parts[:_IOV_BATCH], parts[_IOV_BATCH:]
            total = sum(len(p) for p in batch)
            try:
                written = os.writev(self.fd, batch)
                if written < total:
                    view = memoryview(b"".join(batch))[written:]
                    while view:
                        view = view[os.write(self.fd, view):]
                self.bytes_written += total
                self.size += total
            except OSError as err:
                # Disk full or I/O error: drop rather than block (and so stall) the container.
                self.dropped += total + sum(len(p) for p in parts)
                if err.errno not in (errno.ENOSPC, errno.EDQUOT):
                    warn(f"write to {self.path} failed: {err}")
                return
        if self._stats_path and time.monotonic() - self._stats_at >= STATS_INTERVAL:
            self.report()


def _gzip(path: str) -> None:
    """``path`` -> ``path.gz`` (written aside, then renamed), then ``path`` goes."""
    import gzip
    import shutil

    try:
        with open(path, "rb") as src, gzip.open(f"{path}.gz.tmp", "wb", compresslevel=1) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        os.chmod(f"{path}.gz.tmp", 0o640)
        os.replace(f"{path}.gz.tmp", f"{path}.gz")
        os.unlink(path)
    except OSError as err:
        warn(f"compressing {path} failed: {err}")


def read_stats_file(path: str) -> tuple[int, int] | None:
    """(bytes, records) a logger reported, or None when there is no (valid) stats file."""
    try:
        with open(path) as f:
            fields = f.read().split()
        return int(fields[0]), int(fields[1])
    except (OSError, ValueError, IndexError):
        return None


def warn(message: str) -> None:
    try:
        sys.stderr.write(f"narwhal-logger[{os.getpid()}]: {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        pass


def set_pipe_size(fd: int) -> None:
    try:
        fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:
        pass
