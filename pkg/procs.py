"""The daemons narwhald owns (containerd, etcd) are found again after a crash by their pid files: these
helpers say whether a pid still is that daemon, find it when its pid file is lost, signal it without caring
whether it is already gone, and stop it (SIGTERM, a grace period, SIGKILL, and a wait until it is gone)."""
from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from pathlib import Path

KILL_WAIT = 5.0  # after SIGKILL: the time a process may take to be gone (a loaded machine, a large address space)


def signal_quietly(pid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to ``pid``; a process that is already gone is no error."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def is_live(pid: int, program: bytes, marker: Path) -> bool:
    """True if ``pid`` is a live (non-zombie) ``program`` whose arguments name ``marker`` (its own config or
    data dir): a recycled pid of another process never passes."""
    cmdline = live_cmdline(pid)
    if not cmdline:
        return False
    return os.path.basename(cmdline[0]) == program and str(marker).encode() in cmdline


def live_cmdline(pid: int) -> list[bytes] | None:
    """The arguments of ``pid`` if it is alive and not a zombie; None if it is gone (or a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    if stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X"):
        return None
    return cmdline


def live_pids(match: Callable[[list[bytes]], bool]) -> list[int]:
    """The live (non-zombie) processes whose arguments ``match`` accepts, found in /proc; one that exits while
    it is read is skipped."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (argv := live_cmdline(int(entry.name))) is not None and match(argv):
            pids.append(int(entry.name))
    return pids


def find_live(program: bytes, marker: Path) -> int | None:
    """The pid of a live ``program`` whose arguments name ``marker``, found in /proc: a daemon whose pid file
    was never written (narwhald killed between starting it and writing the file) or was lost."""
    needle = str(marker).encode()
    found = live_pids(lambda argv: os.path.basename(argv[0]) == program and needle in argv)
    return found[0] if found else None


async def terminate(pid: int, alive: Callable[[], bool], timeout: float) -> bool:
    """SIGTERM ``pid``, wait up to ``timeout`` s for ``alive()`` to turn false, then SIGKILL and wait (bounded)
    until it is gone; True if it is gone. ``alive`` is the caller's own test (a child's poll, ``is_live``),
    so a recycled pid is never waited on."""
    loop = asyncio.get_running_loop()
    if not alive():
        return True
    signal_quietly(pid, signal.SIGTERM)
    deadline = loop.time() + timeout
    while alive() and loop.time() < deadline:
        await asyncio.sleep(0.05)
    if alive():
        signal_quietly(pid, signal.SIGKILL)
        deadline = loop.time() + KILL_WAIT
        while alive() and loop.time() < deadline:
            await asyncio.sleep(0.05)
    return not alive()
