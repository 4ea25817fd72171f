"""The shim-run logger, cgroup stats and OOM detection on real containerd tasks.

Containers are made straight on the daemon's containerd (a busybox rootfs
directory, a minimal spec, runc) in a namespace of their own, so narwhald's
runtime logic stays out of the way: these are the building blocks it uses.
"""
from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from lib.daemon import DaemonProcess
from lib.rawtask import RawTask, busybox_rootfs, create_task, minimal_spec, start_task
from lib.wait import async_wait_for

from pkg.cgroups import cleanup, fs, oom
from pkg.cgroups.stats import CpuUsageTracker, read_stats
from pkg.containerd.client import Client
from pkg.logs.binary import logger_uri, read_pid_file, reopen_container_log
from pkg.logs.criformat import decode_line
from pkg.logs.reader import ReadOptions, read_log

NAMESPACE = "narwhal-rawtask"
PARENT = "/narwhal-test-" + uuid.uuid4().hex[:8]
# Prints a 40000-byte line (split at max-line), then numbered stdout/stderr lines forever.
CHATTY = [
    "sh", "-c",
    "head -c 40000 /dev/zero | tr '\\0' x; echo; i=0; "
    "while true; do echo \"out $i\"; echo \"err $i\" >&2; i=$((i+1)); sleep 0.02; done",
]


@pytest.fixture
async def env(daemon: DaemonProcess, tmp_path: Path) -> AsyncIterator[dict[str, object]]:
    client = Client(daemon.state / "containerd" / "containerd.sock", NAMESPACE)
    await client.wait_ready(30)
    tasks: list[RawTask] = []
    yield {
        "client": client,
        "tasks": tasks,
        "rootfs": await asyncio.to_thread(busybox_rootfs, tmp_path / "rootfs"),  # off the loop
        "runc_root": daemon.state / "runc-rawtask",
        "dir": tmp_path,
    }
    for task in tasks:
        await task.destroy()
    await cleanup.remove_cgroup(PARENT)
    await client.close()


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().split(b"\n")[:-1] if path.exists() else []


async def test_logger_through_shim_survives_narwhald(env: dict[str, object], daemon: DaemonProcess) -> None:
    client, tasks, tmp = env["client"], env["tasks"], env["dir"]
    assert isinstance(client, Client) and isinstance(tasks, list) and isinstance(tmp, Path)
    cid = "chatty-" + uuid.uuid4().hex[:8]
    log = tmp / "pods" / "ns_pod_uid" / "c" / "0.log"
    pid_file = tmp / "state" / f"{cid}.logger.pid"
    pid_file.parent.mkdir()
    uri = logger_uri(log, pid_file=pid_file)
    spec = minimal_spec(env["rootfs"], CHATTY, f"{PARENT}/{cid}")  # type: ignore[arg-type]
    task = await create_task(client, cid, spec, env["runc_root"], uri)  # type: ignore[arg-type]
    tasks.append(task)

    await async_wait_for(lambda: len(_lines(log)) > 20)
    records = [decode_line(raw) for raw in _lines(log)]
    # The long line: two 16 KiB partials and the rest as the full record, on stdout.
    assert [(r.stream, r.partial, len(r.content)) for r in records[:3]] == [
        ("stdout", True, 16384), ("stdout", True, 16384), ("stdout", False, 40000 - 2 * 16384)
    ]
    tagged = {(r.stream, r.content.split(b" ")[0]) for r in records[3:]}
    assert tagged == {("stdout", b"out"), ("stderr", b"err")}
    entries = [e async for e in read_log(log, ReadOptions(tail=4, streams=frozenset({"stderr"})))]
    assert len(entries) == 4 and all(e.content.startswith(b"err ") for e in entries)

    # narwhald dies; the logger is the shim's child and keeps copying.
    logger = read_pid_file(pid_file)
    assert logger is not None
    daemon.kill9()
    size = log.stat().st_size
    await async_wait_for(lambda: log.stat().st_size > size + 1000)
    assert os.getppid() != logger.pid and Path(f"/proc/{logger.pid}").exists()

    # Rotation as the kubelet does it: rename, then ReopenContainerLog.
    os.rename(log, log.with_name("0.log.20261127-000000"))
    await reopen_container_log(pid_file)
    await async_wait_for(lambda: len(_lines(log)) > 10)
    assert all(decode_line(raw).content.split(b" ")[0] in (b"out", b"err") for raw in _lines(log))
    old_size = log.with_name("0.log.20261127-000000").stat().st_size
    await asyncio.sleep(0.3)
    assert log.with_name("0.log.20261127-000000").stat().st_size == old_size  # nothing more goes to the old file

    # Stats from the container's cgroup.
    cgroup = f"{PARENT}/{cid}"
    tracker = CpuUsageTracker()
    first = read_stats(cgroup)
    assert first.cpu is not None and first.cpu.usage_core_nano_seconds > 0
    assert tracker.update(cid, first.cpu).usage_nano_cores is None
    await asyncio.sleep(0.5)
    second = read_stats(cgroup)
    assert second.cpu is not None
    rate = tracker.update(cid, second.cpu).usage_nano_cores
    assert rate is not None and 0 < rate < 2_000_000_000 * os.cpu_count()  # type: ignore[operator]
    assert second.memory is not None and 0 < second.memory.working_set_bytes <= second.memory.usage_bytes
    assert second.memory.rss_bytes > 0 and second.memory.page_faults > 0
    assert second.pids is not None and second.pids.current >= 1  # sh (and at times its sleep)
    assert cleanup.list_children(PARENT) == [cgroup]
    assert fs.cgroup_of_pid(task.pid) == cgroup

    # Exit: the logger drains and exits with the task, and removes its pid file.
    await task.destroy()
    await async_wait_for(lambda: not Path(f"/proc/{logger.pid}").exists() or _zombie(logger.pid))
    assert not pid_file.exists()
    assert cleanup.cgroup_dirs(cgroup) == []  # runc removed it on delete


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True


async def test_oom_killed_container_is_detected(env: dict[str, object]) -> None:
    client, tasks, tmp = env["client"], env["tasks"], env["dir"]
    assert isinstance(client, Client) and isinstance(tasks, list) and isinstance(tmp, Path)
    cid = "oom-" + uuid.uuid4().hex[:8]
    cgroup = f"{PARENT}/{cid}"
    # String doubling in the shell: unbounded memory growth.
    hog = ["sh", "-c", "echo start; x=xxxxxxxx; while true; do x=$x$x; done"]
    spec = minimal_spec(env["rootfs"], hog, cgroup, memory_limit=32 << 20)  # type: ignore[arg-type]
    task = await create_task(client, cid, spec, env["runc_root"], logger_uri(tmp / "oom.log"),  # type: ignore[arg-type]
                             start=False)
    tasks.append(task)
    assert not oom.was_oom_killed(cgroup)
    watcher = oom.OomWatcher()
    events: list[str] = []
    watcher.add(cid, cgroup, events.append)
    try:
        await start_task(task)
        exit_status = await task.wait(timeout=60)
        assert exit_status == 137
        assert oom.was_oom_killed(cgroup)  # checked before the task is deleted
        async with asyncio.timeout(10):
            while not events:
                await asyncio.sleep(0.05)
        assert events[0] == cid
    finally:
        watcher.close()
    await task.destroy()
    assert oom.read_oom(cgroup) is None
    assert b"stdout F start" in (tmp / "oom.log").read_bytes()


async def test_tty_container_logs_one_stream(env: dict[str, object]) -> None:
    client, tasks, tmp = env["client"], env["tasks"], env["dir"]
    assert isinstance(client, Client) and isinstance(tasks, list) and isinstance(tmp, Path)
    cid = "tty-" + uuid.uuid4().hex[:8]
    log = tmp / "tty.log"
    pid_file = tmp / "tty.pid"
    spec = minimal_spec(env["rootfs"], ["sh", "-c", "echo to-out; echo to-err >&2; sleep 0.2"],  # type: ignore[arg-type]
                        f"{PARENT}/{cid}")
    spec["process"]["terminal"] = True
    task = await create_task(client, cid, spec, env["runc_root"],  # type: ignore[arg-type]
                             logger_uri(log, pid_file=pid_file, tty=True), terminal=True)
    tasks.append(task)
    assert await task.wait() == 0
    # The logger exits with the console even though the shim never closes the unused stderr pipe.
    await async_wait_for(lambda: not pid_file.exists())
    records = [decode_line(raw) for raw in _lines(log)]
    assert [(r.stream, r.partial, r.content) for r in records] == [
        ("stdout", False, b"to-out\r"), ("stdout", False, b"to-err\r")
    ]
