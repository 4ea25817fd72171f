"""narwhal-logger: the shim-side copier from a container's stdio to its CRI log file.

containerd's runc v2 shim runs it for a task created with a ``binary://``
stdout URI (``pkg.logs.uri.logger_uri``): the container's stdout arrives on
fd 3, stderr on fd 4, and closing fd 5 tells the shim we are ready.  The URI's
query becomes ``key value`` argument pairs in no particular order:

* ``path``      the CRI log file (opened O_APPEND, created 0640, parents made)
* ``max-line``  longest record before a line is split into ``P`` chunks (16 KiB)
* ``pid-file``  where the logger writes ``<pid> <reopen generation>``; narwhald
                sends SIGUSR1 to reopen ``path`` (ReopenContainerLog) and waits
                for the generation to move (``pkg.logs.binary.reopen_container_log``)
* ``tty``       ``true`` when the container has a terminal: one stream, stdout
* ``stdout-fd``, ``stderr-fd``, ``ready-fd``  other descriptors than 3, 4, 5
                (when narwhald runs the logger itself on fifos)
* ``early-ready`` ``true`` from the launcher, which closed fd 5 itself (unless ``ready-fd`` is given)
* ``max-size``  rotate once the file would grow past this many bytes (Docker's ``--log-opt max-size``)
* ``max-file``  how many files to keep, the current one included (``path.1`` is the newest rotated one)
* ``compress``  ``true``: rotated files are gzipped (``path.1.gz``, ...)

The logger is a child of the shim, not of narwhald, so logs keep flowing when
narwhald dies.  It exits when every stream reaches EOF; on SIGTERM (the shim
closes the pipes, then signals) it drains what is left for a bounded time.
It never exits early on write errors: a dead reader would SIGPIPE the
container.  Imports are kept to the standard library so it starts fast.
"""
from __future__ import annotations

import errno
import fcntl
import os
import select
import sys
import time

from pkg.logs.timestamp import TimestampFormatter

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing alone costs ~20 ms at start-up
if TYPE_CHECKING:
    import signal
else:
    # The C module behind `signal`: the same functions and constants without importing enum (and
    # collections, functools) at start-up.  The shim waits for this process to start before it starts
    # the container, so every import here is on StartContainer's path.  For the same reason the loop
    # below uses select.epoll rather than `selectors`.
    import _signal as signal

READ_SIZE = 256 << 10
DEFAULT_MAX_LINE = 16 * 1024  # containerd's max_container_log_line_size (= criformat.DEFAULT_MAX_LINE)
PIPE_SIZE = 1 << 20
DRAIN_AFTER_TERM = 5.0
# An unterminated line (a shell prompt, `echo -n`) is written as a P record once the stream has been
# quiet this long, so log followers (Attach, `logs -f`) see it; the rest of the line follows later.
PARTIAL_FLUSH_AFTER = 0.1
F_SETPIPE_SZ = 1031
# Totals of bytes and records written go to ``<pid-file>.stats`` for narwhald's metrics (read_stats_file).
STATS_SUFFIX = ".stats"
STATS_INTERVAL = 1.0
_IOV_BATCH = 512  # well below IOV_MAX (1024)


class _Stream:
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
            _warn(f"cannot open log file {self.path}: {err}")
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

    def feed(self, stream: _Stream, chunk: bytes, *, final: bool = False) -> None:
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

    def _feed_lines(self, stream: _Stream, chunk: bytes, full: bytes, out: list[bytes | memoryview]) -> bool:
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

    def _feed_general(self, stream: _Stream, chunk: bytes, full: bytes, part: bytes,
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
            _warn(f"rotating {self.path} failed: {err}")
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
                    _warn(f"write to {self.path} failed: {err}")
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
        _warn(f"compressing {path} failed: {err}")


def read_stats_file(path: str) -> tuple[int, int] | None:
    """(bytes, records) a logger reported, or None when there is no (valid) stats file."""
    try:
        with open(path) as f:
            fields = f.read().split()
        return int(fields[0]), int(fields[1])
    except (OSError, ValueError, IndexError):
        return None


class PidFile:
    """``<pid> <generation>``, replaced atomically so a reader never sees a torn write."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.generation = 0

    def write(self) -> None:
        tmp = f"{self.path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(f"{os.getpid()} {self.generation}\n")
        os.replace(tmp, self.path)

    def remove(self) -> None:
        try:
            with open(self.path) as f:
                mine = f.read().split()[:1] == [str(os.getpid())]
            if mine:
                os.unlink(self.path)
        except OSError:
            pass


def parse_args(argv: list[str]) -> dict[str, str]:
    """containerd passes the URI query as ``key value`` pairs; ``--key=value`` is accepted for manual runs."""
    opts: dict[str, str] = {}
    args = list(argv)
    while args:
        key = args.pop(0)
        if key.startswith("--"):
            key, sep, value = key[2:].partition("=")
            if not sep:
                value = args.pop(0) if args else ""
        else:
            value = args.pop(0) if args else ""
        opts[key] = value
    return opts


def _warn(message: str) -> None:
    try:
        sys.stderr.write(f"narwhal-logger[{os.getpid()}]: {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        pass


def _set_pipe_size(fd: int) -> None:
    try:
        fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:
        pass


def run(opts: dict[str, str], stdout_fd: int = 3, stderr_fd: int = 4, ready_fd: int | None = 5) -> int:
    path = opts.get("path", "")
    if not path:
        _warn("missing 'path'")
        return 2
    try:
        max_line = int(opts.get("max-line") or DEFAULT_MAX_LINE)
        stats = opts["pid-file"] + STATS_SUFFIX if opts.get("pid-file") else ""
        writer = LogWriter(path, max_line, stats, max_size=int(opts.get("max-size") or 0),
                           max_files=int(opts.get("max-file") or 1), compress=opts.get("compress") == "true")
    except ValueError as err:
        _warn(f"bad argument: {err}")
        return 2
    tty = opts.get("tty", "").lower() in ("1", "true", "yes")
    pid_file = PidFile(opts["pid-file"]) if opts.get("pid-file") else None

    flags = {"reopen": False, "term": False}

    def on_signal(signum: int, _frame: object) -> None:
        flags["reopen" if signum == signal.SIGUSR1 else "term"] = True

    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    signal.signal(signal.SIGUSR1, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)

    streams = [_Stream(stdout_fd, b"stdout")]
    if tty:
        # With a terminal the shim leaves fd 4's write end open forever: never wait for its EOF.
        os.close(stderr_fd)
    else:
        streams.append(_Stream(stderr_fd, b"stderr"))
    poller = select.epoll()
    by_fd: dict[int, _Stream] = {}
    for stream in streams:
        os.set_blocking(stream.fd, False)
        _set_pipe_size(stream.fd)
        poller.register(stream.fd, select.EPOLLIN)
        by_fd[stream.fd] = stream
    poller.register(wake_r, select.EPOLLIN)

    if pid_file is not None:
        try:
            pid_file.write()
        except OSError as err:
            _warn(f"cannot write pid file {pid_file.path}: {err}")
    if ready_fd is not None:
        os.close(ready_fd)

    open_streams = len(streams)
    drain_deadline: float | None = None
    try:
        while open_streams:
            now = time.monotonic()
            deadlines = [s.pending_since + PARTIAL_FLUSH_AFTER for s in streams if s.pending_since is not None]
            if drain_deadline is not None:
                deadlines.append(drain_deadline)
            timeout = max(0.0, min(deadlines) - now) if deadlines else -1.0
            try:
                events = poller.poll(timeout)
            except InterruptedError:
                events = []
            now = time.monotonic()
            for stream in streams:
                if stream.pending_since is not None and now - stream.pending_since >= PARTIAL_FLUSH_AFTER:
                    writer.feed(stream, b"", final=True)
                    stream.pending_since = None
            if drain_deadline is not None and now >= drain_deadline:
                break
            for fd, _ in events:  # readable or hung up: either way a read tells
                if fd == wake_r:
                    try:
                        while os.read(wake_r, 512):
                            pass
                    except BlockingIOError:
                        pass
                    continue
                stream = by_fd[fd]
                try:
                    chunk = os.read(stream.fd, READ_SIZE)
                except BlockingIOError:
                    continue
                except OSError as err:
                    _warn(f"read from {stream.name.decode()} failed: {err}")
                    chunk = b""
                if chunk:
                    writer.feed(stream, chunk)
                    if not stream.pending:
                        stream.pending_since = None
                    elif stream.pending_since is None:
                        stream.pending_since = time.monotonic()
                else:
                    writer.feed(stream, b"", final=True)
                    poller.unregister(stream.fd)
                    del by_fd[stream.fd]
                    os.close(stream.fd)
                    open_streams -= 1
            if flags["reopen"]:
                flags["reopen"] = False
                writer.open()
                if pid_file is not None:
                    pid_file.generation += 1
                    try:
                        pid_file.write()
                    except OSError as err:
                        _warn(f"cannot write pid file {pid_file.path}: {err}")
            if flags["term"] and drain_deadline is None:
                drain_deadline = time.monotonic() + DRAIN_AFTER_TERM
    finally:
        for stream in streams:
            if stream.pending:
                writer.feed(stream, b"", final=True)
        writer.close()
        if pid_file is not None:
            pid_file.remove()
    if writer.dropped:
        _warn(f"dropped {writer.dropped} bytes of log output")
    return 0


def main() -> int:
    opts = parse_args(sys.argv[1:])
    # The launcher (pkg.logs.binary.write_launcher) closed fd 5 already: the number may be reused since.
    early_ready = opts.pop("early-ready", "") == "true" and "ready-fd" not in opts
    # Started by narwhald itself (fifo stdio, for containers with stdin): it names the fds it passed.
    fds = [int(opts.pop(key, default)) for key, default in (("stdout-fd", 3), ("stderr-fd", 4), ("ready-fd", 5))]
    return run(opts, fds[0], fds[1], None if early_ready else fds[2])


if __name__ == "__main__":
    sys.exit(main())
