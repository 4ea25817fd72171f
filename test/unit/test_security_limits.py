"""Bounded resources (issue 15): ExecSync's two streams share one budget below gRPC's 16 MiB, and sockets never
exist with a mode wider than 0660, whatever the umask."""
from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

from pkg import sockets
from pkg.runtime.exec import MAX_SYNC_TOTAL, _Budget, _Capture


async def test_exec_sync_streams_share_one_budget() -> None:
    budget = _Budget(1000)
    out, err = _Capture(800, budget), _Capture(800, budget)
    await out.write(b"o" * 700)
    await err.write(b"e" * 700)
    await out.write(b"o" * 700)
    assert len(out.data) == 700 and len(err.data) == 300 and budget.left == 0
    assert MAX_SYNC_TOTAL < 16 << 20


def test_sockets_are_born_0660_under_any_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        sock = sockets.bind_unix(tmp_path / "api.sock")
        assert stat.S_IMODE(os.stat(tmp_path / "api.sock").st_mode) == 0o660
        sock.close()
        with sockets.staged(tmp_path / "cri.sock") as private:
            assert stat.S_IMODE(os.stat(private.parent).st_mode) == 0o700
            s = socket.socket(socket.AF_UNIX)
            s.bind(str(private))
        assert stat.S_IMODE(os.stat(tmp_path / "cri.sock").st_mode) == 0o660
        assert sorted(p.name for p in tmp_path.iterdir()) == ["api.sock", "cri.sock"]
        s.close()
    finally:
        os.umask(old)
