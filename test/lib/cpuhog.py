"""A CPU hog beside a test: busy-loop processes the test starts and kills, so races that a busy machine
hides or reveals are exercised both ways (idle and loaded variants of the same test)."""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator

LOADS = ("idle", "loaded")  # pytest ids of the two variants


@contextlib.contextmanager
def load(kind: str, processes: int | None = None) -> Iterator[None]:
    """``kind`` "loaded": one busy loop per CPU (or ``processes``) for the block; "idle": nothing."""
    if kind == "idle":
        yield
        return
    assert kind == "loaded", kind
    count = processes or os.cpu_count() or 1
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"], stdin=subprocess.DEVNULL)
            for _ in range(count)]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
        for hog in hogs:
            hog.wait(30)
