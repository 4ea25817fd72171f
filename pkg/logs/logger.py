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

import os
import select
import sys
import time

from pkg.logs.writer import (
    DEFAULT_MAX_LINE,
    PARTIAL_FLUSH_AFTER,
    READ_SIZE,
    STATS_SUFFIX,
    LogWriter,
    Stream,
    set_pipe_size,
    warn,
)

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing alone costs ~20 ms at start-up
if TYPE_CHECKING:
    import signal
else:
    # The C module behind `signal`: the same functions and constants without importing enum (and
    # collections, functools) at start-up.  The shim waits for this process to start before it starts
    # the container, so every import here is on StartContainer's path.  For the same reason the loop
    # below uses select.epoll rather than `selectors`.
    import _signal as signal

DRAIN_AFTER_TERM = 5.0


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


def run(opts: dict[str, str], stdout_fd: int = 3, stderr_fd: int = 4, ready_fd: int | None = 5) -> int:
    path = opts.get("path", "")
    if not path:
        warn("missing 'path'")
        return 2
    try:
        max_line = int(opts.get("max-line") or DEFAULT_MAX_LINE)
        stats = opts["pid-file"] + STATS_SUFFIX if opts.get("pid-file") else ""
        writer = LogWriter(path, max_line, stats, max_size=int(opts.get("max-size") or 0),
                           max_files=int(opts.get("max-file") or 1), compress=opts.get("compress") == "true")
    except ValueError as err:
        warn(f"bad argument: {err}")
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

    streams = [Stream(stdout_fd, b"stdout")]
    if tty:
        # With a terminal the shim leaves fd 4's write end open forever: never wait for its EOF.
        os.close(stderr_fd)
    else:
        streams.append(Stream(stderr_fd, b"stderr"))
    poller = select.epoll()
    by_fd: dict[int, Stream] = {}
    for stream in streams:
        os.set_blocking(stream.fd, False)
        set_pipe_size(stream.fd)
        poller.register(stream.fd, select.EPOLLIN)
        by_fd[stream.fd] = stream
    poller.register(wake_r, select.EPOLLIN)

    if pid_file is not None:
        try:
            pid_file.write()
        except OSError as err:
            warn(f"cannot write pid file {pid_file.path}: {err}")
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
                    warn(f"read from {stream.name.decode()} failed: {err}")
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
                        warn(f"cannot write pid file {pid_file.path}: {err}")
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
        warn(f"dropped {writer.dropped} bytes of log output")
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
