"""Cgroup stats, OOM counters, cleanup and disk usage on fake v1 (hybrid) and v2 trees."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from pkg import errors
from pkg.cgroups import cleanup, fs, oom
from pkg.cgroups.disk_usage import directory_usage
from pkg.cgroups.stats import CpuStats, CpuUsageTracker, read_stats, read_stats_async, read_stats_many

CG = "/kubepods/pod1/ctr1"


def _files(directory: Path, files: dict[str, str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (directory / name).write_text(content)


@pytest.fixture
def v1(tmp_path: Path) -> fs.Hierarchies:
    """A hybrid host: cpu and cpuacct as separate hierarchies (as on this machine), unified without controllers."""
    root = tmp_path / "cgroup"
    rel = CG.lstrip("/")
    _files(root / "cpuacct" / rel, {
        "cpuacct.usage": "5000000000\n",
        "cpuacct.stat": "user 300\nsystem 100\n",
        "cpuacct.usage_percpu": "3000000000 2000000000 \n",
    })
    _files(root / "cpu" / rel, {"cpu.stat": "nr_periods 10\nnr_throttled 2\nthrottled_time 12345\n"})
    _files(root / "memory" / rel, {
        "memory.usage_in_bytes": "104857600\n",
        "memory.limit_in_bytes": "209715200\n",
        "memory.max_usage_in_bytes": "115343360\n",
        "memory.stat": "cache 1\nrss 2\ntotal_cache 41943040\ntotal_rss 52428800\ntotal_inactive_file 20971520\n"
                       "total_pgfault 1000\ntotal_pgmajfault 7\ninactive_file 3\n",
        "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
    })
    _files(root / "pids" / rel, {"pids.current": "3\n", "pids.max": "max\n"})
    (root / "systemd" / rel).mkdir(parents=True)
    (root / "unified" / rel).mkdir(parents=True)
    return fs.detect(root)


@pytest.fixture
def v2(tmp_path: Path) -> fs.Hierarchies:
    root = tmp_path / "cgroup2"
    _files(root, {"cgroup.controllers": "cpu memory pids\n"})
    _files(root / CG.lstrip("/"), {
        "cpu.stat": "usage_usec 5000000\nuser_usec 3000000\nsystem_usec 2000000\nnr_periods 4\nnr_throttled 1\n"
                    "throttled_usec 50\n",
        "memory.current": "104857600\n",
        "memory.max": "max\n",
        "memory.stat": "anon 52428800\nfile 41943040\ninactive_file 20971520\npgfault 1000\npgmajfault 7\n",
        "memory.events": "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
        "pids.current": "3\n",
        "pids.max": "100\n",
    })
    return fs.detect(root)


def test_detect_layouts(v1: fs.Hierarchies, v2: fs.Hierarchies) -> None:
    assert not v1.is_v2 and v1.unified is not None and {"cpu", "cpuacct", "memory", "pids", "systemd"} <= set(v1.v1)
    assert v2.is_v2 and v2.controller("memory", CG) == v2.root / CG.lstrip("/")
    assert v1.controller("memory", "/../../etc") == v1.v1["memory"] / "etc"  # never climbs out


def test_detect_combined_controller_dirs(tmp_path: Path) -> None:
    (tmp_path / "cpu,cpuacct").mkdir()
    os.symlink("cpu,cpuacct", tmp_path / "cpu")
    os.symlink("cpu,cpuacct", tmp_path / "cpuacct")
    h = fs.detect(tmp_path)
    assert h.controller("cpuacct", "/a") is not None
    assert len(h.all_roots()) == 1  # the links are one hierarchy


def test_v1_stats(v1: fs.Hierarchies) -> None:
    stats = read_stats(CG, v1, now_ns=42)
    assert stats.cpu == CpuStats(
        timestamp_ns=42, usage_core_nano_seconds=5_000_000_000, user_nano_seconds=3_000_000_000,
        system_nano_seconds=1_000_000_000, per_cpu_nano_seconds=(3_000_000_000, 2_000_000_000),
        periods=10, throttled_periods=2, throttled_nano_seconds=12345,
    )
    mem = stats.memory
    assert mem is not None
    assert mem.usage_bytes == 100 << 20
    assert mem.working_set_bytes == 80 << 20  # usage − total_inactive_file (not the local inactive_file)
    assert mem.rss_bytes == 50 << 20 and mem.cache_bytes == 40 << 20
    assert (mem.page_faults, mem.major_page_faults) == (1000, 7)
    assert mem.limit_bytes == 200 << 20 and mem.available_bytes == 120 << 20
    assert mem.max_usage_bytes == 110 << 20
    assert stats.pids is not None and (stats.pids.current, stats.pids.limit) == (3, None)


def test_v1_unlimited_memory_has_no_available_bytes(v1: fs.Hierarchies) -> None:
    (v1.v1["memory"] / CG.lstrip("/") / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    mem = read_stats(CG, v1).memory
    assert mem is not None and mem.limit_bytes is None and mem.available_bytes is None


def test_v2_stats(v2: fs.Hierarchies) -> None:
    stats = read_stats(CG, v2, now_ns=7)
    assert stats.cpu is not None
    assert stats.cpu.usage_core_nano_seconds == 5_000_000_000
    assert (stats.cpu.user_nano_seconds, stats.cpu.system_nano_seconds) == (3_000_000_000, 2_000_000_000)
    assert stats.cpu.throttled_nano_seconds == 50_000
    mem = stats.memory
    assert mem is not None
    assert mem.working_set_bytes == 80 << 20 and mem.rss_bytes == 50 << 20
    assert mem.limit_bytes is None and mem.available_bytes is None
    assert stats.pids is not None and stats.pids.limit == 100


def test_working_set_never_negative(v2: fs.Hierarchies) -> None:
    (v2.root / CG.lstrip("/") / "memory.stat").write_text("inactive_file 999999999999\n")
    mem = read_stats(CG, v2).memory
    assert mem is not None and mem.working_set_bytes == 0


async def test_missing_cgroup(v1: fs.Hierarchies) -> None:
    with pytest.raises(errors.NotFound):
        read_stats("/kubepods/gone", v1)
    many = await read_stats_many([CG, "/kubepods/gone"], v1)
    assert list(many) == [CG]
    assert (await read_stats_async(CG, v1)).pids is not None
    with pytest.raises(errors.NotFound):
        await read_stats_async("/kubepods/gone", v1)


def test_cpu_usage_tracker() -> None:
    tracker = CpuUsageTracker()
    first = tracker.update("c", CpuStats(timestamp_ns=1_000_000_000, usage_core_nano_seconds=10**9))
    assert first.usage_nano_cores is None
    second = tracker.update("c", CpuStats(timestamp_ns=3_000_000_000, usage_core_nano_seconds=2 * 10**9))
    assert second.usage_nano_cores == 500_000_000  # 1 s of CPU over 2 s: half a core
    same_time = tracker.update("c", CpuStats(timestamp_ns=3_000_000_000, usage_core_nano_seconds=2 * 10**9))
    assert same_time.usage_nano_cores == 500_000_000
    restarted = tracker.update("c", CpuStats(timestamp_ns=4_000_000_000, usage_core_nano_seconds=5))
    assert restarted.usage_nano_cores is None
    tracker.forget("c")
    assert tracker.update("c", CpuStats(timestamp_ns=5_000_000_000, usage_core_nano_seconds=9)).usage_nano_cores is None


def test_oom_counters(v1: fs.Hierarchies, v2: fs.Hierarchies) -> None:
    assert oom.read_oom(CG, v1) == oom.OomState(0, False)
    assert not oom.was_oom_killed(CG, v1)
    control = v1.v1["memory"] / CG.lstrip("/") / "memory.oom_control"
    control.write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    assert oom.was_oom_killed(CG, v1) and not oom.was_oom_killed(CG, v1, baseline=2)
    assert oom.was_oom_killed(CG, v2) and oom.read_oom(CG, v2) == oom.OomState(1, False)
    assert oom.read_oom("/gone", v2) is None and not oom.was_oom_killed("/gone", v2)


async def test_oom_watcher_polls_v2(v2: fs.Hierarchies) -> None:
    import asyncio

    watcher = oom.OomWatcher(v2, poll_interval=0.01)
    hits: list[str] = []
    watcher.add("ctr1", CG, hits.append)
    try:
        await asyncio.sleep(0.05)
        assert hits == []  # the existing count is the baseline
        (v2.root / CG.lstrip("/") / "memory.events").write_text("oom 2\noom_kill 2\n")
        async with asyncio.timeout(5):
            while not hits:
                await asyncio.sleep(0.01)
        assert hits == ["ctr1"]
    finally:
        watcher.close()
    with pytest.raises(errors.NotFound):
        watcher.add("x", "/gone", hits.append)


async def test_remove_and_list_cgroups(v1: fs.Hierarchies) -> None:
    # Fake trees hold regular files, which a real cgroupfs removes with the directory; drop them here.
    for root in v1.all_roots():
        for dirpath, _, filenames in os.walk(root):
            for name in filenames:
                os.unlink(os.path.join(dirpath, name))
    (v1.v1["memory"] / "kubepods" / "pod1" / "ctr2" / "child").mkdir(parents=True)
    (v1.v1["pids"] / "kubepods" / "pod2").mkdir(parents=True)
    assert cleanup.list_children("/kubepods", v1) == ["/kubepods/pod1", "/kubepods/pod2"]
    assert cleanup.list_children("kubepods/pod1", v1) == ["/kubepods/pod1/ctr1", "/kubepods/pod1/ctr2"]
    await cleanup.remove_cgroup("/kubepods/pod1", v1)
    assert cleanup.cgroup_dirs("/kubepods/pod1", v1) == []
    assert cleanup.list_children("/kubepods", v1) == ["/kubepods/pod2"]
    await cleanup.remove_cgroup("/kubepods/pod1", v1)  # idempotent
    with pytest.raises(errors.InvalidArgument):
        await cleanup.remove_cgroup("/", v1)


def test_cgroup_of_pid(tmp_path: Path) -> None:
    (tmp_path / "12").mkdir()
    (tmp_path / "12" / "cgroup").write_text(
        "9:name=systemd:/a\n4:memory:/kubepods/x\n2:cpu,cpuacct:/kubepods/x\n0::/u\n"
    )
    assert fs.cgroup_of_pid(12, proc=tmp_path) == "/kubepods/x"
    assert fs.cgroup_of_pid(12, "cpuacct", proc=tmp_path) == "/kubepods/x"
    (tmp_path / "13").mkdir()
    (tmp_path / "13" / "cgroup").write_text("0::/kubepods/y\n")
    assert fs.cgroup_of_pid(13, proc=tmp_path) == "/kubepods/y"
    with pytest.raises(errors.NotFound):
        fs.cgroup_of_pid(14, proc=tmp_path)


async def test_directory_usage(tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    (upper / "d").mkdir(parents=True)
    (upper / "d" / "f").write_bytes(b"x" * 100_000)
    os.link(upper / "d" / "f", upper / "hardlink")
    os.symlink("/etc/passwd", upper / "link")
    usage = await directory_usage(upper)
    expected_blocks = sum(os.lstat(p).st_blocks * 512 for p in (upper, upper / "d", upper / "d" / "f", upper / "link"))
    assert usage.inodes == 4  # upper, d, f (once, despite the hard link), link
    assert usage.bytes == expected_blocks and usage.bytes >= 100_000
    with pytest.raises(errors.NotFound):
        await directory_usage(tmp_path / "missing")
