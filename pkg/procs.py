"""The daemons narwhald owns (containerd, etcd) are found again after a crash by their pid files: these
helpers say whether a pid still is that daemon, and signal it without caring whether it is already gone."""
from __future__ import annotations

import os
import signal
from pathlib import Path


def signal_quietly(pid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to ``pid``; a process that is already gone is no error."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def is_live(pid: int, program: bytes, marker: Path) -> bool:
    """True if ``pid`` is a live (non-zombie) ``program`` whose arguments name ``marker`` (its own config or
    data dir): a recycled pid of another process never passes."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X"):
        return False
    return bool(cmdline) and os.path.basename(cmdline[0]) == program and str(marker).encode() in cmdline
