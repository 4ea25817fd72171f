"""narwhald gives glibc's freed heap back after a burst of work (narwhal/heap.py): when, and that it does."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from narwhal.heap import Glibc, HeapTrimmer

REPO = Path(__file__).resolve().parents[2]


class FakeAllocator:
    def __init__(self, free: int) -> None:
        self.free = free
        self.trims = 0

    def free_bytes(self) -> int:
        return self.free

    def trim(self) -> None:
        self.trims += 1


def test_trims_once_per_burst_of_frees() -> None:
    heap = FakeAllocator(100_000)
    trimmer = HeapTrimmer(heap, threshold=1000)
    assert not trimmer.check()  # idle: nothing freed since start
    heap.free += 999
    assert not trimmer.check()
    heap.free += 1
    assert trimmer.check() and heap.trims == 1
    assert not trimmer.check() and heap.trims == 1  # free chunks stay free after a trim: no second trim for them


def test_waits_for_the_burst_to_end() -> None:
    """While the free level still moves by the threshold between looks (a pull in flight), no trim."""
    heap = FakeAllocator(0)
    trimmer = HeapTrimmer(heap, threshold=1000)
    for level in (5000, 2000, 9000):
        heap.free = level
        assert not trimmer.check()
    heap.free = 9500  # held still (within the threshold) for one period: the burst is over
    assert trimmer.check() and heap.trims == 1


def test_reused_chunks_lower_the_level() -> None:
    """Chunks reused after a trim are resident again: what is freed afterwards counts from the lowest level."""
    heap = FakeAllocator(50_000)
    trimmer = HeapTrimmer(heap, threshold=1000)
    heap.free = 10_000  # a burst allocates out of the free chunks
    assert not trimmer.check()
    heap.free = 10_900
    assert not trimmer.check()
    heap.free = 11_000  # ... and frees again: 1000 bytes over the low, the level still since the last look
    assert trimmer.check() and heap.trims == 1


# A process that allocates and frees 64 MiB in 64 KiB blocks, keeping every 16th so the heap cannot shrink
# from the top: glibc keeps the freed blocks' pages resident until malloc_trim.
PROGRAM = """
import ctypes, sys
from narwhal.heap import Glibc, HeapTrimmer
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD: the blocks come from the heap, as after glibc raised it itself
trimmer = HeapTrimmer(Glibc.load())
blocks = [libc.malloc(65536) for _ in range(1024)]
for b in blocks:
    ctypes.memset(b, 1, 65536)
for i, b in enumerate(blocks):
    if i % 16:
        libc.free(b)
before = rss()
assert not trimmer.check()  # the frees just happened: the level moved since the trimmer's first look
trimmed = trimmer.check()
print(before, rss(), trimmed, trimmer.check())
"""


def test_gives_freed_pages_back() -> None:
    assert Glibc.load() is not None  # the test hosts run glibc >= 2.33
    proc = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=60, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    before, after, trimmed, again = proc.stdout.split()
    assert trimmed == "True" and again == "False"
    assert int(before) - int(after) > 40 * 1024, (before, after)  # ~60 MiB freed; KiB
