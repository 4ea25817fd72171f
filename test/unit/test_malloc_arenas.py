"""narwhald caps glibc's malloc arenas (narwhal.main.cap_malloc_arenas): threads share them instead of each
keeping one of its own, each with what it freed (issue 21: narwhald's growth over its first pods)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Six threads malloc'ing at once (as the default executor's do), then glibc's malloc_stats() counts the arenas.
PROGRAM = """
import ctypes, sys, threading
if sys.argv[1] == "capped":
    from narwhal.main import cap_malloc_arenas
    cap_malloc_arenas()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
barrier = threading.Barrier(6)
def work():
    barrier.wait()
    for _ in range(2000):
        libc.free(libc.malloc(4096))
threads = [threading.Thread(target=work) for _ in range(6)]
for t in threads: t.start()
for t in threads: t.join()
libc.malloc_stats()
"""


def arenas(mode: str, env: dict[str, str] | None = None) -> int:
    proc = subprocess.run([sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True, timeout=60,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})
    assert proc.returncode == 0, proc.stderr
    return sum(line.startswith("Arena ") for line in proc.stderr.splitlines())


def test_threads_share_one_arena() -> None:
    assert arenas("capped") == 1
    assert arenas("uncapped") > 1  # what glibc does without the cap: the test can tell


def test_an_explicit_malloc_arena_max_wins() -> None:
    assert arenas("capped", {"MALLOC_ARENA_MAX": "4"}) > 1
