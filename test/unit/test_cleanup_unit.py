"""narwhald cleanup's pure parts: which systemd service a process runs in (a forced cleanup refuses
to stop a narwhald that Restart=always would start again)."""
from __future__ import annotations

from pathlib import Path

import pytest

from narwhal.cleanup import Cleanup, service_in
from pkg.config import Config


@pytest.mark.parametrize(("text", "unit"), [
    ("0::/system.slice/narwhald.service\n", "narwhald.service"),
    ("12:pids:/system.slice/narwhald.service\n1:name=systemd:/system.slice/narwhald.service\n", "narwhald.service"),
    ("0::/user.slice/user-0.slice/session-3.scope\n", ""),
    ("9:name=systemd:/\n8:pids:/\n", ""),
    ("12:pids:/system.slice/narwhald.service\n1:name=systemd:/\n", ""),  # only systemd's own hierarchy counts
    ("", ""),
])
def test_service_in(text: str, unit: str) -> None:
    assert service_in(text) == unit


def test_files_removes_the_staging_dirs_of_pulls_cut_short(tmp_path: Path) -> None:
    """stream-unpack's staging dirs under the instance's containerd root go with `narwhald cleanup` (its root
    and state stay unless asked: they are the instance's data)."""
    cfg = Config(root=tmp_path / "root", state=tmp_path / "state", cri_socket=tmp_path / "cri.sock",
                 docker_socket=tmp_path / "docker.sock")
    layer = cfg.staging_root / "narwhal" / "1-abc"
    (layer / "usr").mkdir(parents=True)
    (layer / "usr" / "file").write_bytes(b"x")
    said: list[str] = []
    Cleanup(cfg, say=said.append)._files()
    assert not cfg.staging_root.exists() and cfg.root.exists()
    assert said == [f"removed {cfg.staging_root}"]
