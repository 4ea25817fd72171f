"""Hand memory glibc holds freed back to the kernel once a burst of work is over (issue 21: narwhald's RSS).

glibc keeps what a thread frees in its arena for reuse: after a pull or a burst of pods, narwhald's heap
holds free chunks whose pages stay resident (and counted in its RSS) until something reuses them, and a
large free block's size raises glibc's automatic trim threshold, so the top of the heap is not trimmed
either.  ``malloc_trim(0)`` gives every free page back (the chunks stay free; the next use faults a zeroed
page in).  It is called when the arena's free bytes have grown by ``threshold`` since the last trim and then held
still for one ``period`` (the burst is over: trimming in the middle of a pull would only hand back pages the
next chunk faults in again), checked every ``period`` seconds with ``mallinfo2`` (a walk of the free lists,
microseconds): an idle daemon never trims twice, a busy one about once per burst.  Not glibc (or glibc
before 2.33): nothing to do."""
from __future__ import annotations

import asyncio
import ctypes
import logging
from typing import Protocol

log = logging.getLogger(__name__)

PERIOD = 1.0
THRESHOLD = 512 * 1024


class _MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2`` (malloc.h, glibc >= 2.33): every field a size_t."""

    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


class Allocator(Protocol):
    """What the trimmer needs of the C allocator (a fake in the unit tests)."""

    def free_bytes(self) -> int: ...

    def trim(self) -> None: ...


class Glibc:
    """glibc's mallinfo2 and malloc_trim through ctypes."""

    def __init__(self, libc: ctypes.CDLL) -> None:
        self._mallinfo2 = libc.mallinfo2
        self._mallinfo2.restype = _MallInfo2
        self._mallinfo2.argtypes = []
        self._trim = libc.malloc_trim
        self._trim.restype = ctypes.c_int
        self._trim.argtypes = [ctypes.c_size_t]

    @classmethod
    def load(cls) -> Glibc | None:
        try:
            return cls(ctypes.CDLL("libc.so.6"))
        except (OSError, AttributeError):  # not glibc, or no mallinfo2
            return None

    def free_bytes(self) -> int:
        """Free bytes held in the malloc arenas (their free chunks, the top chunk's included)."""
        return int(self._mallinfo2().fordblks)

    def trim(self) -> None:
        self._trim(0)


class HeapTrimmer:
    """Trims once the free bytes grew by ``threshold`` over the lowest level seen since the last trim."""

    def __init__(self, allocator: Allocator, threshold: int = THRESHOLD) -> None:
        self.allocator = allocator
        self.threshold = threshold
        self.trims = 0
        self._low = self._last = allocator.free_bytes()

    def check(self) -> bool:
        """One look; True if it trimmed.  Free chunks that are reused lower the level (their pages are
        resident again); what is freed after that is what the next trim gives back, once the level stops
        moving by ``threshold`` between two looks."""
        free = self.allocator.free_bytes()
        moving = abs(free - self._last) >= self.threshold
        self._last = free
        if free < self._low:
            self._low = free
        if moving or free - self._low < self.threshold:
            return False
        self.trims += 1
        log.debug("heap trimmed: %.1f MiB freed since the last trim", (free - self._low) / 2**20)
        self.trim()
        return True

    def trim(self) -> None:
        """Trim now (narwhald does once at READY: the start-up's freed heap, ~0.6 MiB of idle RSS), and look on
        from the level that leaves."""
        self.allocator.trim()
        self._low = self._last = self.allocator.free_bytes()

    async def run(self, period: float = PERIOD) -> None:
        while True:
            await asyncio.sleep(period)
            self.check()


def trimmer() -> HeapTrimmer | None:
    glibc = Glibc.load()
    return HeapTrimmer(glibc) if glibc is not None else None
