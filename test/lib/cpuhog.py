"""A CPU hog beside a test: busy-loop processes the test starts and kills, so races that a busy machine
hides or reveals are exercised both ways (idle and loaded variants of the same test)."""
from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator

LOADS = ("idle", "loaded")  # pytest ids of the two variants


@contextlib.contextmanager
def load(kind: str, processes: int = 1) -> Iterator[None]:
    """``kind`` "loaded": ``processes`` busy loops for the block (one keeps a core of the 2-core test machine
    busy without doubling the suite's time); "idle": nothing."""
    if kind == "idle":
        yield
        return
    assert kind == "loaded", kind
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"], stdin=subprocess.DEVNULL)
            for _ in range(processes)]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
        for hog in hogs:
            hog.wait(30)
