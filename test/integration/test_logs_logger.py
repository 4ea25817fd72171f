"""narwhal-logger run as containerd's shim runs it: fds 3/4/5, argument pairs, signals."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from lib.logger import LOGGER, LoggerProcess, records, spawn_logger
from lib.wait import wait_for

from pkg import errors
from pkg.logs.binary import read_pid_file, reopen_container_log


@pytest.fixture
def loggers() -> Iterator[list[LoggerProcess]]:
    started: list[LoggerProcess] = []
    yield started
    for lp in started:
        lp.kill()


def test_streams_partials_and_exit_on_eof(tmp_path: Path, loggers: list[LoggerProcess]) -> None:
    log = tmp_path / "pods" / "c" / "0.log"
    # Arguments arrive in map order from containerd: any order must work.
    lp = spawn_logger(["max-line", "8", "path", str(log)])
    loggers.append(lp)
    assert lp.ready == b""  # the ready pipe was closed, not written
    lp.write("stdout", b"short\n0123456789abcdef0123\n")
    lp.write("stderr", b"oops\n")
    wait_for(lambda: log.exists() and log.read_bytes().count(b"\n") == 5)
    lp.write("stdout", b"no newline yet")
    lp.close("stdout")
    # stderr is still open: the logger must keep running.
    time.sleep(0.2)
    assert lp.proc.poll() is None
    lp.write("stderr", b"last\n")
    assert lp.wait() == 0
    got = records(log)
    assert [r for r in got if r[0] == "stdout"] == [
        ("stdout", False, b"short"),
        ("stdout", True, b"01234567"),
        ("stdout", True, b"89abcdef"),
        ("stdout", False, b"0123"),
        ("stdout", True, b"no newli"),
        ("stdout", True, b"ne yet"),
    ]
    assert [r for r in got if r[0] == "stderr"] == [("stderr", False, b"oops"), ("stderr", False, b"last")]


def test_tty_mode_ignores_stderr(tmp_path: Path, loggers: list[LoggerProcess]) -> None:
    log = tmp_path / "0.log"
    lp = spawn_logger(["path", str(log), "tty", "true"])
    loggers.append(lp)
    lp.write("stdout", b"$ prompt\r\n")
    lp.close("stdout")
    # The stderr write end stays open (as the shim leaves it with a terminal), yet the logger exits.
    assert lp.proc.wait(10) == 0
    assert records(log) == [("stdout", False, b"$ prompt\r")]


async def test_reopen_after_rename(tmp_path: Path, loggers: list[LoggerProcess]) -> None:
    log = tmp_path / "0.log"
    pid_file = tmp_path / "logger.pid"
    lp = spawn_logger(["path", str(log), "pid-file", str(pid_file)])
    loggers.append(lp)
    state = read_pid_file(pid_file)
    assert state is not None and state.pid == lp.proc.pid and state.generation == 0
    lp.write("stdout", b"before\n")
    wait_for(lambda: log.exists() and b"before" in log.read_bytes())
    os.rename(log, tmp_path / "0.log.20261127")
    await reopen_container_log(pid_file)
    # Returned only once the logger writes to the new file.
    assert log.exists()
    assert read_pid_file(pid_file) == type(state)(lp.proc.pid, 1)
    lp.write("stdout", b"after\n")
    lp.write("stderr", b"after too\n")
    assert lp.wait() == 0
    assert records(tmp_path / "0.log.20261127") == [("stdout", False, b"before")]
    assert sorted(records(log)) == [("stderr", False, b"after too"), ("stdout", False, b"after")]
    # The logger removed its pid file: reopening now is a precondition failure, as for a stopped container.
    assert not pid_file.exists()
    with pytest.raises(errors.FailedPrecondition):
        await reopen_container_log(pid_file)


async def test_stale_pid_file_is_never_signalled(tmp_path: Path) -> None:
    pid_file = tmp_path / "logger.pid"
    pid_file.write_text(f"{os.getpid()} 0\n")  # a live pid that is not a logger
    assert read_pid_file(pid_file) is None
    with pytest.raises(errors.FailedPrecondition):
        await reopen_container_log(pid_file)


def test_sigterm_drains_then_exits(tmp_path: Path, loggers: list[LoggerProcess]) -> None:
    """The shim closes the pipes, then sends SIGTERM: buffered output must still reach the file."""
    log = tmp_path / "0.log"
    lp = spawn_logger(["path", str(log)])
    loggers.append(lp)
    lp.proc.send_signal(signal.SIGSTOP)  # let output pile up in the pipe
    lp.write("stdout", b"line\n" * 1000)
    lp.close()
    lp.proc.send_signal(signal.SIGTERM)
    lp.proc.send_signal(signal.SIGCONT)
    assert lp.proc.wait(10) == 0
    assert records(log) == [("stdout", False, b"line")] * 1000


def test_full_speed_writer_is_not_stalled(tmp_path: Path, loggers: list[LoggerProcess]) -> None:
    """32 MiB of short lines go through intact (speed itself is measured by hack/bench/logs.py)."""
    log = tmp_path / "0.log"
    lp = spawn_logger(["path", str(log)])
    loggers.append(lp)
    chunk = b"".join(b"%07d\n" % i for i in range(1 << 16))  # 512 KiB of numbered lines
    for _ in range(64):
        lp.write("stdout", chunk)
    assert lp.wait(120) == 0
    data = log.read_bytes()
    assert data.count(b" stdout F ") == data.count(b"\n") == 64 << 16
    # Every line intact and in order: strip the record prefixes and compare with what was written.
    contents = b"".join(line[-7:] + b"\n" for line in data.split(b"\n")[:-1])
    assert contents == chunk * 64


def test_descriptors_named_on_the_command_line(tmp_path: Path) -> None:
    """narwhald runs the logger itself on fifos for containers with stdin, passing other fd numbers."""
    log = tmp_path / "0.log"
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    ready_r, ready_w = os.pipe()
    proc = subprocess.Popen(
        [str(LOGGER), "path", str(log), "stdout-fd", str(out_r), "stderr-fd", str(err_r), "ready-fd", str(ready_w)],
        pass_fds=(out_r, err_r, ready_w), stdin=subprocess.DEVNULL,
    )
    try:
        for fd in (out_r, err_r, ready_w):
            os.close(fd)
        assert os.read(ready_r, 1) == b""
        os.write(out_w, b"via fifo\n")
        os.write(err_w, b"err via fifo\n")
        os.close(out_w)
        os.close(err_w)
        assert proc.wait(10) == 0
        assert sorted(records(log)) == [("stderr", False, b"err via fifo"), ("stdout", False, b"via fifo")]
    finally:
        os.close(ready_r)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
