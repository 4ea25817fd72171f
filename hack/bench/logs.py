#!/usr/bin/env python3
"""Throughput of narwhal-logger against `cat` to a file (the anchor).

A writer pushes a fixed volume of output through a pipe as fast as it can,
once into `cat > file` and once into narwhal-logger (stdout on fd 3, as the
shim wires it).  Reported: MB/s of container output and lines/s, for short
lines (`yes`-like, 2 bytes), typical lines (80 bytes) and long lines that get
split into partial records.  The writer is this process, blocking on a full
pipe exactly as a container would: the figure is how fast a container can log.

    .venv/bin/python hack/bench/logs.py [--mb 256] [--max-line 16384]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "test"))

from lib.logger import spawn_logger  # noqa: E402


def _payload(line_len: int, size: int) -> bytes:
    line = (b"x" * (line_len - 1)) + b"\n"
    block = line * max(1, (1 << 20) // len(line))
    return block * max(1, size // len(block))


def _push(fd: int, payload: bytes, total: int) -> None:
    """Write ``total`` bytes (whole repetitions of ``payload``) in 64 KiB writes, blocking like a container."""
    sent = 0
    while sent < total:
        view = memoryview(payload)
        while view:
            view = view[os.write(fd, view[: 1 << 16]):]
        sent += len(payload)


def bench_cat(payload: bytes, total: int, out: Path) -> float:
    with open(out, "wb") as f:
        proc = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=f)
        assert proc.stdin is not None
        start = time.perf_counter()
        _push(proc.stdin.fileno(), payload, total)
        proc.stdin.close()
        proc.wait()
        return time.perf_counter() - start


def bench_logger(payload: bytes, total: int, out: Path, max_line: int) -> tuple[float, int]:
    lp = spawn_logger(["path", str(out), "max-line", str(max_line)])
    start = time.perf_counter()
    _push(lp.stdout, payload, total)
    lp.close()
    lp.wait(600)
    elapsed = time.perf_counter() - start
    return elapsed, out.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=256, help="MiB of container output per case")
    parser.add_argument("--max-line", type=int, default=16384)
    parser.add_argument("--dir", default=None, help="where to write the log files (default: a temp dir)")
    args = parser.parse_args()
    total = args.mb << 20
    cases = [("short lines (2 B)", 2), ("lines of 80 B", 80), ("lines of 64 KiB (split)", 64 << 10)]
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        print(f"{args.mb} MiB of output per case, max-line {args.max_line}")
        print(f"{'case':26} {'cat MB/s':>10} {'logger MB/s':>12} {'logger lines/s':>15} {'log bytes/out':>14}")
        for name, line_len in cases:
            payload = _payload(line_len, 4 << 20)
            total = (total // len(payload)) * len(payload) or len(payload)
            lines = total // line_len
            t_cat = bench_cat(payload, total, Path(tmp) / "cat.out")
            os.unlink(Path(tmp) / "cat.out")
            t_log, size = bench_logger(payload, total, Path(tmp) / "0.log", args.max_line)
            os.unlink(Path(tmp) / "0.log")
            mb = total / 1e6
            print(f"{name:26} {mb / t_cat:10.0f} {mb / t_log:12.0f} {lines / t_log:15.0f} {size / total:14.1f}")


if __name__ == "__main__":
    main()
