"""Host facts for /info: cgroup feature probing, os-release, the engine ID."""
from __future__ import annotations

from pathlib import Path

from pkg.cgroups import fs as cgroupfs
from pkg.system import _cgroup_features, _engine_id, _os_release


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")


def test_v1_features_follow_the_control_files(tmp_path: Path) -> None:
    for f in ("memory/memory.limit_in_bytes", "memory/memory.oom_control", "cpu,cpuacct/cpu.shares",
              "cpu,cpuacct/cpu.cfs_period_us", "cpu,cpuacct/cpu.cfs_quota_us", "pids/pids.max"):
        _touch(tmp_path / f)
    features = _cgroup_features(cgroupfs.detect(tmp_path))
    assert features.memory_limit and features.oom_kill_disable and features.cpu_shares and features.pids_limit
    assert features.cpu_cfs_period and features.cpu_cfs_quota
    assert not features.swap_limit and not features.kernel_memory and not features.cpuset


def test_v2_features_follow_the_enabled_controllers(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
    (tmp_path / "cgroup.subtree_control").write_text("memory pids\n")
    features = _cgroup_features(cgroupfs.detect(tmp_path))
    assert features.memory_limit and features.swap_limit and features.pids_limit
    assert not features.cpu_shares and not features.kernel_memory


def test_os_release(tmp_path: Path) -> None:
    path = tmp_path / "os-release"
    path.write_text('NAME="Debian GNU/Linux"\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nVERSION_ID="12"\n')
    assert _os_release(path) == ("Debian GNU/Linux 12 (bookworm)", "12")
    assert _os_release(tmp_path / "missing") == ("Linux", "")


def test_engine_id_is_made_once_and_kept(tmp_path: Path) -> None:
    first = _engine_id(tmp_path / "root" / "engine-id")
    assert len(first) == 36
    assert _engine_id(tmp_path / "root" / "engine-id") == first
