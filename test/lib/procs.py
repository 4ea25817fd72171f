"""Processes found by their command line: the test-side view of what an instance runs (shims, the log service)."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


def pids_where(match: Callable[[list[bytes]], bool]) -> list[int]:
    """The live processes whose argv (``/proc/<pid>/cmdline`` split on NUL) ``match`` accepts; a process that
    exits while it is read is skipped."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if match(args):
            found.append(int(proc.name))
    return found
