"""Run narwhal-logger the way containerd's shim does: stdout on fd 3, stderr on fd 4, ready pipe on fd 5."""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pkg.logs.criformat import decode_line

REPO = Path(__file__).resolve().parents[2]
LOGGER = REPO / ".venv" / "bin" / "narwhal-logger"


@dataclass
class LoggerProcess:
    proc: subprocess.Popen[bytes]
    stdout: int  # write ends, owned by the test
    stderr: int
    ready: bytes

    def write(self, stream: str, data: bytes) -> None:
        fd = self.stdout if stream == "stdout" else self.stderr
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]

    def close(self, stream: str | None = None) -> None:
        for name in (("stdout", "stderr") if stream is None else (stream,)):
            fd = getattr(self, name)
            if fd >= 0:
                os.close(fd)
                setattr(self, name, -1)

    def wait(self, timeout: float = 20.0) -> int:
        self.close()
        return self.proc.wait(timeout)

    def kill(self) -> None:
        self.close()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def spawn_logger(args: list[str], logger: Path = LOGGER) -> LoggerProcess:
    """Start the logger with shim-style fds; returns once it has signalled readiness."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    ready_r, ready_w = os.pipe()
    sources = (out_r, err_r, ready_w)

    def child_fds() -> None:
        # Duplicate first so that moving into 3, 4, 5 cannot clobber a source that sits there.
        dups = [os.dup(fd) for fd in sources]
        for target, fd in zip((3, 4, 5), dups, strict=True):
            os.dup2(fd, target)
        for fd in dups:
            if fd not in (3, 4, 5):
                os.close(fd)

    proc = subprocess.Popen(
        [str(logger), *args],
        stdin=subprocess.DEVNULL,
        env={"CONTAINER_ID": "test", "CONTAINER_NAMESPACE": "test"},
        preexec_fn=child_fds,
        close_fds=False,
    )
    for fd in sources:
        os.close(fd)
    ready = os.read(ready_r, 1)
    os.close(ready_r)
    return LoggerProcess(proc, out_w, err_w, ready)


def records(path: Path) -> list[tuple[str, bool, bytes]]:
    """The CRI log file's records as (stream, partial, content)."""
    return [(r.stream, r.partial, r.content) for r in map(decode_line, path.read_bytes().split(b"\n")[:-1])]


def streams_of(*logs: Path) -> dict[str, bytes]:
    """The output each stream wrote, rebuilt from CRI log files' records (P: no newline after the content)."""
    out: dict[str, bytes] = {"stdout": b"", "stderr": b""}
    for log in logs:
        for raw in log.read_bytes().splitlines():
            line = decode_line(raw)
            out[line.stream] += line.content + (b"" if line.partial else b"\n")
    return out
