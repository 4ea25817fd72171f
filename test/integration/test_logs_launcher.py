"""The launcher the shim runs (pkg.logs.binary.write_launcher): /bin/sh signals the shim ready at once, then
execs the Python logger, which must still write correct CRI records, be found by its pid file and reopen."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from lib.logger import records, spawn_logger
from lib.wait import wait_for

from pkg.logs.binary import LOGGER_NAME, read_pid_file, reopen_container_log, write_launcher


def test_launcher_is_a_shell_script_that_execs_the_logger(tmp_path: Path) -> None:
    launcher = write_launcher(tmp_path / "bin")
    assert launcher.name == LOGGER_NAME
    assert launcher.read_text().startswith("#!/bin/sh\n")
    assert write_launcher(tmp_path / "bin") == launcher  # rewriting an unchanged launcher is a no-op


async def test_shim_style_launch_logs_and_reopens_right_after_start(tmp_path: Path) -> None:
    launcher = write_launcher(tmp_path / "bin")
    log, pid_file = tmp_path / "pods" / "0.log", tmp_path / "logger.pid"
    lp = spawn_logger(["path", str(log), "pid-file", str(pid_file)], logger=launcher)
    try:
        assert lp.ready == b""  # fd 5 closed (by the launcher), never written
        # Reopen at once, as a kubelet rotating right after StartContainer would: it waits for the pid file.
        await reopen_container_log(pid_file)
        state = read_pid_file(pid_file)
        assert state is not None and state.generation == 1 and state.pid == lp.proc.pid  # exec'd in place
        lp.write("stdout", b"one\n")
        lp.write("stderr", b"two\n")
        wait_for(lambda: log.exists() and log.read_bytes().count(b"\n") >= 2)
        os.rename(log, tmp_path / "pods" / "0.log.1")
        await reopen_container_log(pid_file)
        lp.write("stdout", b"three\ntail")
        assert lp.wait() == 0
    finally:
        lp.kill()
    assert records(tmp_path / "pods" / "0.log.1") == [("stdout", False, b"one"), ("stderr", False, b"two")]
    # The unterminated tail goes out as a P record (after the quiet period or at EOF).
    assert records(log) == [("stdout", False, b"three"), ("stdout", True, b"tail")]
    assert not pid_file.exists()


def test_narwhald_style_launch_signals_ready_on_the_named_fd(tmp_path: Path) -> None:
    """narwhald starts the logger itself on fifos with ``ready-fd``: the logger, not the launcher, closes it."""
    launcher = write_launcher(tmp_path / "bin")
    log = tmp_path / "1.log"
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    ready_r, ready_w = os.pipe()
    proc = subprocess.Popen(
        [str(launcher), "path", str(log), "stdout-fd", str(out_r), "stderr-fd", str(err_r), "ready-fd", str(ready_w)],
        pass_fds=(out_r, err_r, ready_w), stdin=subprocess.DEVNULL)
    for fd in (out_r, err_r, ready_w):
        os.close(fd)
    try:
        assert os.read(ready_r, 1) == b""
        os.write(out_w, b"hello\n")
    finally:
        for fd in (out_w, err_w, ready_r):
            os.close(fd)
        assert proc.wait(20) == 0
    assert records(log) == [("stdout", False, b"hello")]
