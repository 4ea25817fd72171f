"""narwhald's side of the log service (``log-service: true``, pkg.logs.service): start or adopt it, restart
it when it dies, register a container's fifos, wait for their end, ReopenContainerLog.

The service runs in its own session (setsid, as containerd does), so a kill -9 of narwhald leaves it
copying; the next narwhald adopts it through its pid file, whose process is checked to be this instance's
service (its command line names the entry script and the state dir), so a recycled pid is never taken.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import subprocess
import sys
from pathlib import Path

import pkg
from pkg import errors
from pkg.logs.service import PID_NAME, SERVICE_ENTRY, SOCKET_NAME, STREAMS_DIR, StreamSpec, valid_key
from pkg.procs import live_cmdline, terminate

log = logging.getLogger(__name__)

START_TIMEOUT = 10.0
REQUEST_TIMEOUT = 10.0
RETRY_EVERY = 0.05


def write_entry(directory: Path) -> Path:
    """The service's entry script: ``pkg.logs.service.main`` with this installation's package dir on sys.path
    (run with ``python -IS``: no site, no editable-install finder, as narwhal-logger)."""
    root = Path(pkg.__file__).resolve().parent.parent
    text = ("import sys\n"
            f"sys.path.insert(0, {str(root)!r})\n"
            "from pkg.logs.service import main\n"
            "sys.exit(main())\n")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / SERVICE_ENTRY
    if not path.exists() or path.read_text() != text:
        tmp = path.with_name(f"{path.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return path


def service_pid(directory: Path) -> int | None:
    """The live log service of ``directory`` (from its pid file, checked against its command line), or None."""
    try:
        pid = int((directory / PID_NAME).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _is_service(pid, directory) else None


def _is_service(pid: int, directory: Path) -> bool:
    args = live_cmdline(pid)
    if args is None:
        return False
    return any(a.endswith(SERVICE_ENTRY.encode()) for a in args) and str(directory).encode() in args


class LogService:
    """One per narwhald instance, shared by both runtime domains."""

    def __init__(self, directory: Path, bin_dir: Path) -> None:
        self.dir = directory
        self.bin_dir = bin_dir
        self.pid: int | None = None
        self.restarts = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = asyncio.Lock()

    @property
    def socket_path(self) -> Path:
        return self.dir / SOCKET_NAME

    # ---- lifecycle ----
    async def ensure_started(self) -> bool:
        """Adopt this instance's running service or start one; True when adopted."""
        async with self._lock:
            pid = await asyncio.to_thread(service_pid, self.dir)
            if pid is not None:
                self.pid, self._proc = pid, None
                log.info("adopting running log service pid %d", pid)
                return True
            await self._start()
            return False

    async def _start(self) -> None:
        if self._proc is not None:
            await asyncio.to_thread(_reap, self._proc)  # a previous instance we started: dead or dying
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        (self.dir / STREAMS_DIR).mkdir(exist_ok=True)
        entry = write_entry(self.bin_dir)
        logfile = os.open(self.dir / "service.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            self._proc = await asyncio.to_thread(
                _spawn, [sys.executable, "-IS", str(entry), "--state", str(self.dir)], logfile)
        finally:
            os.close(logfile)
        self.pid = self._proc.pid
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        while await asyncio.to_thread(service_pid, self.dir) != self.pid:
            if self._proc.poll() is not None:
                raise errors.Unavailable(f"the log service exited with {self._proc.returncode} at start "
                                         f"(see {self.dir / 'service.log'})")
            if loop.time() > deadline:
                raise errors.Unavailable(f"the log service did not start within {START_TIMEOUT:g}s")
            await asyncio.sleep(0.01)
        log.info("started log service pid %d (state %s)", self.pid, self.dir)

    async def watch(self) -> None:
        """Restart the service whenever it dies (it re-opens every registered container's fifos)."""
        loop = asyncio.get_running_loop()
        while True:
            pid = self.pid
            if pid is not None:
                try:
                    fd = os.pidfd_open(pid)
                except ProcessLookupError:
                    fd = -1
                if fd >= 0 and not _is_service(pid, self.dir):  # gone before the pidfd (or its pid reused)
                    os.close(fd)
                    fd = -1
                if fd >= 0:
                    gone: asyncio.Future[None] = loop.create_future()
                    loop.add_reader(fd, _resolve, gone)
                    try:
                        await gone
                    finally:
                        loop.remove_reader(fd)
                        os.close(fd)
            if self._proc is not None and self._proc.pid == pid:
                await asyncio.to_thread(self._proc.wait)  # our child: reaped
            log.warning("the log service (pid %s) exited: restarting it", pid)
            self.restarts += 1
            await self.ensure_started()

    async def stop(self, timeout: float = 10.0) -> bool:
        """SIGTERM (then SIGKILL) the service (``narwhald cleanup``); True when none runs any more."""
        pid = await asyncio.to_thread(service_pid, self.dir)
        gone = pid is None or await terminate(pid, functools.partial(_is_service, pid, self.dir), timeout)
        if gone and self._proc is not None:
            await asyncio.to_thread(self._proc.wait)  # our child: reaped
        return gone

    # ---- requests ----
    async def _ask(self, line: str, timeout: float) -> str:
        """One request, one reply line; retried while the service is (re)starting, up to ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                async with asyncio.timeout(max(0.01, deadline - loop.time())):
                    reader, writer = await asyncio.open_unix_connection(str(self.socket_path))
                    try:
                        writer.write(line.encode() + b"\n")
                        await writer.drain()
                        reply = await reader.readline()
                    finally:
                        writer.close()
                        with contextlib.suppress(OSError):
                            await writer.wait_closed()
                if reply.endswith(b"\n"):
                    return reply.decode(errors="replace").strip()
            except TimeoutError:  # (an OSError too: caught first)
                raise errors.DeadlineExceeded(f"the log service did not answer {line.split()[0]!r} "
                                              f"within {timeout:g}s") from None
            except (OSError, asyncio.IncompleteReadError):
                pass  # not listening yet, or it died while we asked: the watcher starts it again
            if loop.time() > deadline:
                raise errors.Unavailable(f"the log service is not running (socket {self.socket_path})")
            await asyncio.sleep(RETRY_EVERY)

    def _registration(self, key: str) -> Path:
        if not valid_key(key):
            raise errors.InvalidArgument(f"bad log stream key {key!r}")
        return self.dir / STREAMS_DIR / f"{key}.json"

    async def add(self, key: str, spec: StreamSpec) -> None:
        """Register the container's fifos and have the service open them (before the shim writes)."""
        path = self._registration(key)
        tmp = path.with_name(f".{path.name}.tmp")
        await asyncio.to_thread(_write_atomic, tmp, path, spec.dump())
        reply = await self._ask(f"add {key}", REQUEST_TIMEOUT)
        if reply != "ok":
            path.unlink(missing_ok=True)
            raise errors.Internal(f"the log service refused {key}: {reply}")

    async def wait_done(self, key: str, timeout: float) -> bool:
        """Until every stream of ``key`` reached EOF and its last record is written; False on timeout.
        Survives a restart of the service in between (the registration file goes only once done)."""
        path = self._registration(key)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while path.exists():
            left = deadline - loop.time()
            if left <= 0:
                return False
            try:
                if await self._ask(f"wait {key}", left) == "ok":
                    return True
            except (errors.DeadlineExceeded, errors.Unavailable):
                return not path.exists()
        return True

    async def reopen(self, key: str) -> None:
        """ReopenContainerLog: returns once the service writes to a file opened again by the log's name."""
        self._registration(key)  # checks the key
        reply = await self._ask(f"reopen {key}", REQUEST_TIMEOUT)
        if reply == "err not running":
            raise errors.FailedPrecondition("container is not running: its log streams have ended")
        if reply != "ok":
            raise errors.Internal(f"reopening the container log failed: {reply}")


def _reap(proc: subprocess.Popen[bytes]) -> None:
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:  # alive but no longer answering as the service (its pid file gone)
        proc.kill()
        proc.wait()


def _spawn(args: list[str], logfile: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=logfile, stderr=logfile, close_fds=True, cwd="/",
                            start_new_session=True)  # its own session: it outlives narwhald, as containerd does


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _write_atomic(tmp: Path, path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(text)
    os.replace(tmp, path)
