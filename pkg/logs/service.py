"""narwhal-log-service: one long-lived process per narwhald instance that copies every container's stdout
and stderr into its log file (``log-service: true``; issue 21: no Python process per container).

Containers get fifo stdio, as containerd's CRI gives them: the runc v2 shim opens each fifo's write end
*and* a read end of its own (containerd pkg/process/io.go), so while this service is down (killed,
restarting) the container never gets EPIPE: the fifo fills, then the container blocks until the service
reads again.  The service's state is a directory (``--state``):

* ``streams/<key>.json``  one registration per container (``StreamSpec``), written by narwhald before the
                          task is created; the service re-opens every one of them when it (re)starts
* ``control.sock``        narwhald's requests, one line per connection, one line back (``ok`` or ``err …``):
                          ``add <key>`` (open the registration's fifos), ``reopen <key>`` (ReopenContainerLog:
                          the log file is opened again by name), ``wait <key>`` (answered once every stream
                          of the container reached EOF and its last record is written: the exit path waits
                          for that), ``ping``
* ``service.pid``         written once the socket listens

The records are written by the same ``LogWriter`` narwhal-logger uses (CRI format, partial lines, Docker's
max-size/max-file rotation, the stats file).  What a kill -9 of this service can lose is what it holds in
memory only: an unterminated line it has not flushed yet (at most ``PARTIAL_FLUSH_AFTER``) and a chunk read
but not yet written (microseconds).  Everything still in the fifos is read by the next instance.
It uses the standard library only.
"""
from __future__ import annotations

import json
import os
import select
import signal
import socket
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from pkg.logs.writer import (
    DEFAULT_MAX_LINE,
    PARTIAL_FLUSH_AFTER,
    READ_SIZE,
    LogWriter,
    Stream,
    set_pipe_size,
)

SERVICE_ENTRY = "narwhal-log-service.py"  # the entry script's name: it names the service in command lines
SOCKET_NAME = "control.sock"
PID_NAME = "service.pid"
STREAMS_DIR = "streams"
MAX_REQUEST = 4096
_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def valid_key(key: str) -> bool:
    """A registration's name: a file name in ``streams/``, never a path."""
    return 0 < len(key) <= 200 and set(key) <= _KEY_CHARS and not key.startswith(".")


@dataclass(frozen=True)
class StreamSpec:
    """What one container's registration says: its fifos (``stderr`` empty with a TTY) and its log."""

    path: str
    stdout: str
    stderr: str = ""
    max_line: int = DEFAULT_MAX_LINE
    stats: str = ""
    max_size: int = 0
    max_files: int = 1
    compress: bool = False

    def dump(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def load(cls, text: str) -> StreamSpec:
        data = json.loads(text)
        return cls(path=str(data["path"]), stdout=str(data["stdout"]), stderr=str(data.get("stderr", "")),
                   max_line=int(data.get("max_line", DEFAULT_MAX_LINE)), stats=str(data.get("stats", "")),
                   max_size=int(data.get("max_size", 0)), max_files=int(data.get("max_files", 1)),
                   compress=bool(data.get("compress", False)))


class _Entry:
    """One registered container: its writer, its open streams and who waits for their end."""

    def __init__(self, key: str, spec: StreamSpec) -> None:
        self.key = key
        self.spec = spec
        self.writer = LogWriter(spec.path, spec.max_line, spec.stats, max_size=spec.max_size,
                                max_files=spec.max_files, compress=spec.compress)
        self.streams: list[Stream] = []
        self.waiters: list[socket.socket] = []


class Service:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.streams_dir = directory / STREAMS_DIR
        self.entries: dict[str, _Entry] = {}
        self.by_fd: dict[int, tuple[_Entry, Stream]] = {}
        # The streams holding an unterminated line (pending_since set): the only ones the loop's partial-line
        # flush looks at, so a wakeup costs the same with 2 or 500 registered streams.
        self.waiting: dict[int, tuple[_Entry, Stream]] = {}
        self.conns: dict[int, tuple[socket.socket, bytearray]] = {}
        self.poller = select.epoll()
        self.term = False

    # ---- registrations ----
    def add(self, key: str) -> str:
        """Open the fifos of ``key``'s registration (again for a stream that already ended); '' or an error."""
        if not valid_key(key):
            return f"bad key {key!r}"
        try:
            spec = StreamSpec.load((self.streams_dir / f"{key}.json").read_text())
        except (OSError, ValueError, KeyError, TypeError) as err:
            return f"no registration for {key}: {err}"
        entry = self.entries.get(key)
        if entry is None:
            try:
                entry = _Entry(key, spec)
            except ValueError as err:
                return f"bad registration for {key}: {err}"
            self.entries[key] = entry
        names = [(spec.stdout, b"stdout")] + ([(spec.stderr, b"stderr")] if spec.stderr else [])
        open_names = {s.name for s in entry.streams}
        for fifo, name in names:
            if name in open_names:
                continue
            try:
                fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError as err:
                _warn(f"{key}: cannot open {fifo}: {err}")  # gone: the container is gone too
                continue
            set_pipe_size(fd)
            stream = Stream(fd, name)
            entry.streams.append(stream)
            self.by_fd[fd] = (entry, stream)
            self.poller.register(fd, select.EPOLLIN)
        if not entry.streams:
            self._finish(entry)
        return ""

    def load_all(self) -> None:
        """On start: every registration a previous instance left is opened again."""
        self.streams_dir.mkdir(parents=True, exist_ok=True)
        for path in sorted(self.streams_dir.glob("*.json")):
            error = self.add(path.name[: -len(".json")])
            if error:
                _warn(error)
                path.unlink(missing_ok=True)

    def _close_stream(self, entry: _Entry, stream: Stream) -> None:
        entry.writer.feed(stream, b"", final=True)
        self.waiting.pop(stream.fd, None)
        self.poller.unregister(stream.fd)
        del self.by_fd[stream.fd]
        os.close(stream.fd)
        entry.streams.remove(stream)
        if not entry.streams:
            self._finish(entry)

    def _finish(self, entry: _Entry) -> None:
        """Every stream ended: the log is complete; the registration goes and the waiters are told."""
        entry.writer.close()
        if entry.writer.dropped:
            _warn(f"{entry.key}: dropped {entry.writer.dropped} bytes of log output")
        (self.streams_dir / f"{entry.key}.json").unlink(missing_ok=True)
        self.entries.pop(entry.key, None)
        for conn in entry.waiters:
            self._reply(conn, "ok")
        entry.waiters.clear()

    # ---- the control socket ----
    def _request(self, conn: socket.socket, line: str) -> None:
        verb, _, key = line.strip().partition(" ")
        if verb == "ping":
            self._reply(conn, f"ok {os.getpid()}")
        elif verb == "add":
            error = self.add(key)
            self._reply(conn, f"err {error}" if error else "ok")
        elif verb == "reopen":
            entry = self.entries.get(key)
            if entry is None:
                self._reply(conn, "err not running")
                return
            entry.writer.open()
            self._reply(conn, "ok" if entry.writer.fd >= 0 else f"err cannot open {entry.spec.path}")
        elif verb == "wait":
            entry = self.entries.get(key)
            if entry is None:
                self._reply(conn, "ok")
            else:
                entry.waiters.append(conn)  # answered by _finish
        else:
            self._reply(conn, f"err unknown request {verb!r}")

    def _reply(self, conn: socket.socket, text: str) -> None:
        try:
            conn.setblocking(True)
            conn.settimeout(1.0)
            conn.sendall(text.encode() + b"\n")
        except OSError:
            pass  # the asker went away
        conn.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            conn.setblocking(False)
            self.conns[conn.fileno()] = (conn, bytearray())
            self.poller.register(conn.fileno(), select.EPOLLIN)

    def _read_conn(self, fd: int) -> None:
        conn, buf = self.conns[fd]
        try:
            chunk = conn.recv(MAX_REQUEST)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        buf += chunk
        if b"\n" not in buf and chunk and len(buf) < MAX_REQUEST:
            return
        self.poller.unregister(fd)
        del self.conns[fd]
        if b"\n" not in buf:
            conn.close()  # hung up, or a request too long
            return
        self._request(conn, buf.split(b"\n", 1)[0].decode(errors="replace"))

    # ---- the loop ----
    def _read_stream(self, fd: int) -> None:
        entry, stream = self.by_fd[fd]
        try:
            chunk = os.read(fd, READ_SIZE)
        except BlockingIOError:
            return
        except OSError as err:
            _warn(f"{entry.key}: read from {stream.name.decode()} failed: {err}")
            chunk = b""
        if not chunk:
            self._close_stream(entry, stream)
            return
        entry.writer.feed(stream, chunk)
        if not stream.pending:
            stream.pending_since = None
            self.waiting.pop(fd, None)
        elif stream.pending_since is None:
            stream.pending_since = time.monotonic()
            self.waiting[fd] = (entry, stream)

    def _flush_partials(self) -> float:
        """Write unterminated lines that waited long enough; the seconds until the next one is due (-1: none)."""
        if not self.waiting:
            return -1.0
        now = time.monotonic()
        due = -1.0
        for fd, (entry, stream) in list(self.waiting.items()):
            assert stream.pending_since is not None
            if now - stream.pending_since >= PARTIAL_FLUSH_AFTER:
                entry.writer.feed(stream, b"", final=True)
                stream.pending_since = None
                del self.waiting[fd]
            else:
                wait = stream.pending_since + PARTIAL_FLUSH_AFTER - now
                due = wait if due < 0 else min(due, wait)
        return due

    def run(self) -> int:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)

        def on_term(_signum: int, _frame: object) -> None:
            self.term = True

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        sock_path = self.dir / SOCKET_NAME
        sock_path.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        listener.bind(str(sock_path))
        os.chmod(sock_path, 0o600)
        listener.listen(128)
        listener.setblocking(False)
        self.poller.register(listener.fileno(), select.EPOLLIN)
        self.poller.register(wake_r, select.EPOLLIN)
        self.load_all()
        pid_path = self.dir / PID_NAME
        tmp = self.dir / f"{PID_NAME}.tmp"
        tmp.write_text(f"{os.getpid()}\n")
        os.replace(tmp, pid_path)
        try:
            while not self.term:
                timeout = self._flush_partials()
                try:
                    events = self.poller.poll(timeout)
                except InterruptedError:
                    continue
                for fd, _ in events:
                    if fd == wake_r:
                        _drain(wake_r)
                    elif fd == listener.fileno():
                        self._accept(listener)
                    elif fd in self.conns:
                        self._read_conn(fd)
                    elif fd in self.by_fd:
                        self._read_stream(fd)
        finally:
            # Stopped (narwhald cleanup, a service manager): what is written stays written; the registrations
            # stay too, so a next instance carries on with whatever the fifos still hold.
            for entry, stream in list(self.by_fd.values()):
                entry.writer.feed(stream, b"", final=True)
            for entry in list(self.entries.values()):
                entry.writer.close()
            try:
                if pid_path.read_text().strip() == str(os.getpid()):
                    pid_path.unlink()
                    sock_path.unlink(missing_ok=True)
            except OSError:
                pass
        return 0


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def _warn(message: str) -> None:
    try:
        sys.stderr.write(f"narwhal-log-service[{os.getpid()}]: {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "--state":
        _warn("usage: narwhal-log-service --state DIR")
        return 2
    return Service(Path(args[1])).run()


if __name__ == "__main__":
    sys.exit(main())
