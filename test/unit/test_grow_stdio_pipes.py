"""grow_stdio_pipes: a process's stdout/stderr pipes reach PIPE_SIZE through /proc/<pid>/fd (issue 21's
log-throughput row), and anything that is not a pipe is left alone."""
from __future__ import annotations

import fcntl
import subprocess

from pkg.logs.writer import PIPE_SIZE
from pkg.runtime.container_io import grow_stdio_pipes

F_GETPIPE_SZ = 1032


def test_grows_the_stdout_and_stderr_pipes_of_a_process() -> None:
    proc = subprocess.Popen(["sleep", "30"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        before = fcntl.fcntl(proc.stdout.fileno(), F_GETPIPE_SZ)
        assert before < PIPE_SIZE
        grow_stdio_pipes(proc.pid)
        assert fcntl.fcntl(proc.stdout.fileno(), F_GETPIPE_SZ) == PIPE_SIZE
        assert fcntl.fcntl(proc.stderr.fileno(), F_GETPIPE_SZ) == PIPE_SIZE
        # The extra read end was closed again: EOF still arrives once the writer is gone.
        proc.kill()
        proc.wait()
        assert proc.stdout.read() == b""
    finally:
        proc.kill()
        proc.wait()
        for f in (proc.stdout, proc.stderr):
            if f is not None:
                f.close()


def test_not_a_pipe_and_gone_processes_are_left_alone() -> None:
    proc = subprocess.Popen(["sleep", "30"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        grow_stdio_pipes(proc.pid)  # /dev/null: nothing to do, no error
    finally:
        proc.kill()
        proc.wait()
    grow_stdio_pipes(proc.pid)  # reaped: no /proc entry, no error
