"""narwhald's side of narwhal-logger: the ``binary://`` log URI and ReopenContainerLog.

The task's stdout URI (``logger_uri``) makes the shim start narwhal-logger,
which then lives as long as the container, whatever happens to narwhald.
To reopen the log file after the kubelet renamed it, narwhald reads the
logger's pid file, checks that the pid still is that logger (its command line
names the pid file, so a recycled pid is never signalled), sends SIGUSR1 and
waits until the logger bumps the generation in the pid file — by then the new
file exists and every later write goes to it.
"""
from __future__ import annotations

import asyncio
import os
import shlex
import signal
import sys
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import pkg
from pkg import errors
from pkg.logs.criformat import DEFAULT_MAX_LINE

LOGGER_NAME = "narwhal-logger"
STARTUP_GRACE = 3.0  # how long ReopenContainerLog waits for a just-started logger's pid file
LOGGER_ENTRY = "narwhal-logger.py"  # the Python side of the launcher (its path names the logger in cmdlines)


def logger_binary() -> Path:
    """The narwhal-logger console script installed beside the running interpreter (the venv's bin)."""
    candidate = Path(sys.executable).parent / LOGGER_NAME
    if not candidate.exists():
        raise errors.FailedPrecondition(f"{LOGGER_NAME} not found at {candidate}: run `make setup`")
    return candidate


def write_launcher(directory: Path) -> Path:
    """The narwhal-logger the shim runs: a /bin/sh launcher that tells the shim "ready" at once, then execs
    ``python -IS`` (no site, no editable-install finder) on the logger with this installation's package dir
    on sys.path.

    The shim waits for the ready signal (fd 5 closed) before it creates the container, so the
    interpreter's start-up (~15 ms, more on a busy host) would sit on every StartContainer.  Signalling
    early loses nothing: the stdout/stderr pipes exist already and buffer what the container writes until
    the logger reads them, and the shim learns nothing more from waiting (it proceeds on EOF, so it never
    detected a logger that failed to start anyway).  ReopenContainerLog waits for the pid file the logger
    writes once it runs.  narwhald's own fifo-path launch passes ``ready-fd``: then the logger signals as
    before and the launcher leaves fd 5 alone.
    """
    root = Path(pkg.__file__).resolve().parent.parent  # this installation's package dir, wherever it lives
    entry = (
        "import sys\n"
        f"sys.path.insert(0, {str(root)!r})\n"
        "from pkg.logs.logger import main\n"
        "sys.exit(main())\n"
    )
    script = (
        "#!/bin/sh\n"
        "# narwhal-logger launcher (pkg.logs.binary.write_launcher): ready for the shim now, then the logger.\n"
        "# narwhald's own fifo-path launch names its ready fd: then the logger signals, and fd 5 may be in use.\n"
        'case " $* " in *" ready-fd "*) ;; *) exec 5>&- ;; esac\n'
        f"exec {shlex.quote(sys.executable)} -IS {shlex.quote(str(directory / LOGGER_ENTRY))} early-ready true \"$@\"\n"
    )
    directory.mkdir(parents=True, exist_ok=True)
    _replace_if_changed(directory / LOGGER_ENTRY, entry)
    path = directory / LOGGER_NAME
    _replace_if_changed(path, script)
    return path


def _replace_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        tmp = path.with_name(f"{path.name}.tmp")
        tmp.write_text(text)
        tmp.chmod(0o755)
        os.replace(tmp, path)


def rotation_args(rotation: tuple[int, int, bool] | None) -> dict[str, str]:
    """narwhal-logger's rotation arguments for (max-size, max-file, compress); none for no rotation."""
    if rotation is None or rotation[0] <= 0:
        return {}
    max_size, max_files, compress = rotation
    return {"max-size": str(max_size), "max-file": str(max_files), "compress": "true" if compress else "false"}


def logger_uri(
    log_path: str | Path,
    *,
    pid_file: str | Path | None = None,
    max_line: int = DEFAULT_MAX_LINE,
    tty: bool = False,
    binary: str | Path | None = None,
    rotation: tuple[int, int, bool] | None = None,
) -> str:
    """``binary:///…/narwhal-logger?path=…&max-line=…&pid-file=…&tty=…`` for a task's stdout (and stderr)."""
    log_path = Path(log_path)
    if not log_path.is_absolute():
        raise errors.InvalidArgument(f"log path must be absolute: {log_path}")
    if max_line <= 0:
        raise errors.InvalidArgument(f"max log line size must be positive: {max_line}")
    query: dict[str, str] = {"path": str(log_path), "max-line": str(max_line)}
    if pid_file is not None:
        query["pid-file"] = str(pid_file)
    if tty:
        query["tty"] = "true"
    query.update(rotation_args(rotation))
    exe = Path(binary) if binary is not None else logger_binary()
    args = "&".join(f"{key}={urllib.parse.quote(value, safe='/')}" for key, value in query.items())
    return f"binary://{urllib.parse.quote(str(exe))}?{args}"


@dataclass(frozen=True)
class LoggerState:
    pid: int
    generation: int


def read_pid_file(pid_file: str | Path) -> LoggerState | None:
    """The live logger behind ``pid_file``, or None when it has exited (or the pid was recycled)."""
    try:
        fields = Path(pid_file).read_text().split()
        state = LoggerState(int(fields[0]), int(fields[1]) if len(fields) > 1 else 0)
        cmdline = Path(f"/proc/{state.pid}/cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return None
    if LOGGER_NAME.encode() not in cmdline or os.fsencode(str(pid_file)) not in cmdline.split(b"\0"):
        return None
    return state


async def reopen_container_log(pid_file: str | Path, timeout: float = 5.0) -> None:
    """Make the container's logger reopen its log path; returns once the new file is in use.

    FailedPrecondition when no logger runs (the container is not running),
    as containerd's ReopenContainerLog does.
    """
    state = read_pid_file(pid_file)
    started_by = time.monotonic() + STARTUP_GRACE
    while state is None and time.monotonic() < started_by:
        # A container just started: its logger may still be starting (the launcher signals the shim
        # before the interpreter is up) and writes the pid file once it can take SIGUSR1.
        await asyncio.sleep(0.02)
        state = await asyncio.to_thread(read_pid_file, pid_file)
    if state is None:
        raise errors.FailedPrecondition("container is not running: no log copier to reopen")
    try:
        os.kill(state.pid, signal.SIGUSR1)
    except ProcessLookupError:
        raise errors.FailedPrecondition("container is not running: log copier exited") from None
    deadline = time.monotonic() + timeout
    while True:
        current = await asyncio.to_thread(read_pid_file, pid_file)
        if current is None or current.pid != state.pid:
            raise errors.FailedPrecondition("container log copier exited while reopening the log")
        if current.generation > state.generation:
            return
        if time.monotonic() > deadline:
            raise errors.DeadlineExceeded(f"log copier (pid {state.pid}) did not reopen its log in {timeout}s")
        await asyncio.sleep(0.01)


async def wait_logger_exit(pid_file: str | Path, timeout: float) -> bool:
    """Wait until the logger behind ``pid_file`` has exited (its last record written); False on timeout.

    Event-driven through a pidfd: the logger is not narwhald's child when the shim runs it.
    """
    state = await asyncio.to_thread(read_pid_file, pid_file)
    if state is None:
        return True
    try:
        fd = os.pidfd_open(state.pid)
    except ProcessLookupError:
        return True
    loop = asyncio.get_running_loop()
    gone: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not gone.done():
            gone.set_result(None)

    loop.add_reader(fd, readable)
    try:
        await asyncio.wait_for(gone, timeout)
        return True
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(fd)
        os.close(fd)
