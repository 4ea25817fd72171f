"""``containerd-gogc``: the GOGC of the containerd narwhald starts, and so of the runc v2 shims and runc, which
inherit containerd's environment (issue 21: the Go heap of narwhald's containerd, docs/benchmarks.md)."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from lib.wait import wait_for

from pkg import config
from pkg.containerd.supervisor import Supervisor, containerd_env
from pkg.errors import InvalidArgument


def test_key_default_and_bounds() -> None:
    assert config.build({}, {}).containerd_gogc == config.Config().containerd_gogc
    assert config.build({"containerd-gogc": 30}, {}).containerd_gogc == 30
    assert config.build({}, {"containerd-gogc": "200"}).containerd_gogc == 200  # the flag's string
    for bad in (0, 9, 1001, "off", -50, True, 1.5):
        with pytest.raises(InvalidArgument, match="containerd-gogc"):
            config.build({"containerd-gogc": bad}, {})


def test_env_sets_gogc_over_narwhalds_own() -> None:
    cfg = config.build({"containerd-gogc": 40}, {})
    env = containerd_env(cfg, {"PATH": "/usr/bin", "GOGC": "off"})
    assert env == {"PATH": "/usr/bin", "GOGC": "40"}


def test_started_containerd_gets_it(tmp_path: Path) -> None:
    """What the started process really sees (a stand-in binary that writes its environment)."""
    dump = tmp_path / "environ"
    fake = tmp_path / "containerd"
    fake.write_text(f"#!/bin/sh\nenv > {dump}.tmp && mv {dump}.tmp {dump}\nexec sleep 60\n")
    fake.chmod(0o755)
    cfg = config.build({"root": str(tmp_path / "root"), "state": str(tmp_path / "state"),
                        "containerd-gogc": 25}, {})
    sup = Supervisor(cfg, binary=str(fake))
    assert sup.ensure_started() is False
    try:
        wait_for(dump.exists, 20, "the stand-in containerd's environment")
        lines = dump.read_text().splitlines()
        assert "GOGC=25" in lines
        assert f"PATH={os.environ['PATH']}" in lines  # narwhald's environment otherwise
    finally:
        assert sup.pid is not None
        os.kill(sup.pid, signal.SIGKILL)
        if sup._proc is not None:
            sup._proc.wait(10)
