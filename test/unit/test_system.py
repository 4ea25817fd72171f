"""Host facts for /info: cgroup feature probing, os-release, the engine ID; /info's human durations."""
from __future__ import annotations

from pathlib import Path

from dockerapi.handlers.system import _human_duration, _human_status
from pkg.cgroups import fs as cgroupfs
from pkg.model.container import ContainerStatus
from pkg.model.state import ContainerState
from pkg.system import _cgroup_features, _engine_id, _os_release

SECOND = 1_000_000_000


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


def test_human_durations_as_go_units() -> None:
    assert _human_duration(0) == "Less than a second"
    assert _human_duration(1 * SECOND) == "1 second"
    assert _human_duration(59 * SECOND) == "59 seconds"
    assert _human_duration(90 * SECOND) == "About a minute"
    assert _human_duration(3 * 60 * SECOND) == "3 minutes"
    assert _human_duration(3600 * SECOND) == "About an hour"
    assert _human_duration(5 * 3600 * SECOND) == "5 hours"
    assert _human_duration(3 * 24 * 3600 * SECOND) == "3 days"


def test_human_status() -> None:
    assert _human_status("created", None) == "Created"
    exited = ContainerStatus(ContainerState.EXITED, finished_at=1, exit_code=3)
    assert _human_status("exited", exited).startswith("Exited (3) ")
    running = ContainerStatus(ContainerState.RUNNING, started_at=1)
    assert _human_status("paused", running).endswith("(Paused)")
