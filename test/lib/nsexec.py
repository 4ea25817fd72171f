"""``nsexec.py NETNS_PATH CMD...``: run CMD inside a pinned network namespace (an nsenter stand-in).

Also importable: ``argv(netns, *cmd)`` builds the command line for subprocess.
"""
from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

CLONE_NEWNET = 0x40000000


def argv(netns: Path | str, *cmd: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), str(netns), *cmd]


def main() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    fd = os.open(sys.argv[1], os.O_RDONLY)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        sys.exit(f"setns {sys.argv[1]}: {os.strerror(ctypes.get_errno())}")
    os.close(fd)
    os.execvp(sys.argv[2], sys.argv[2:])


if __name__ == "__main__":
    main()
