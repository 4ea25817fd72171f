"""The pure parts of Docker exec/logs/stats/top: exec process edits, timestamps, /proc and ps parsing."""
from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from dockerapi import times
from dockerapi.handlers.logs import parse_tail
from dockerapi.handlers.stats import render
from pkg import errors
from pkg.cgroups.stats import ContainerStats, CpuStats, MemoryStats, PidsStats
from pkg.docker.views import exec as exec_view
from pkg.docker.views import exec_records
from pkg.docker.views.attach import DockerAttach
from pkg.docker.views.exec import (
    MAX_FINISHED_PER_CONTAINER,
    ExecConfig,
    ExecManager,
    ExecState,
    adjust_process,
    start_failure_code,
)
from pkg.docker.views.stats import (
    BlkioEntry,
    NetworkCounters,
    Sample,
    parse_blkio,
    parse_io_stat,
    parse_net_dev,
    parse_proc_stat,
    parse_ps,
)
from pkg.events import DOCKER_DOMAIN, EventBus
from pkg.logs.criformat import encode_line
from pkg.model.container import ContainerConfig, ContainerMetadata, ContainerStatus
from pkg.model.state import ContainerState
from pkg.runtime.runs import RunTracker
from pkg.store import Store
from pkg.streaming.backend import ExecStreams

PROCESS = {"args": ["sh"], "env": ["PATH=/bin", "A=1"], "cwd": "/", "user": {"uid": 0, "gid": 0},
           "capabilities": {"bounding": ["CAP_CHOWN"]}, "apparmorProfile": "x"}


def test_exec_env_overrides_by_key_and_appends() -> None:
    out = adjust_process(PROCESS, ExecConfig(cmd=("true",), env=("A=2", "B=3")), None)
    assert out["env"] == ["PATH=/bin", "A=2", "B=3"]
    assert out["cwd"] == "/" and out["capabilities"] == PROCESS["capabilities"]
    assert PROCESS["env"] == ["PATH=/bin", "A=1"]  # the input is not modified


def test_exec_workdir_user_privileged_console() -> None:
    config = ExecConfig(cmd=("true",), working_dir="/tmp", privileged=True, tty=True, console_size=(30, 100))
    out = adjust_process(PROCESS, config, {"uid": 1000, "gid": 1000, "additionalGids": [1000]},
                         ["CAP_CHOWN", "CAP_SYS_ADMIN"])
    assert out["cwd"] == "/tmp"
    assert out["user"] == {"uid": 1000, "gid": 1000, "additionalGids": [1000]}
    assert out["capabilities"]["effective"] == ["CAP_CHOWN", "CAP_SYS_ADMIN"]
    assert "apparmorProfile" not in out
    assert out["consoleSize"] == {"height": 30, "width": 100}


def test_start_failure_exit_codes() -> None:
    assert start_failure_code(errors.Internal('exec: "nope": executable file not found in $PATH')) == 127
    assert start_failure_code(errors.Internal("stat /x: no such file or directory")) == 127
    assert start_failure_code(errors.Internal("permission denied")) == 126
    assert start_failure_code(errors.InvalidArgument("user 'x' not found in the image's /etc/passwd")) == 126


@pytest.mark.parametrize(("value", "expected"), [
    ("", None), ("0", None), ("1700000000", 1_700_000_000_000_000_000),
    ("1700000000.5", 1_700_000_000_500_000_000), ("1700000000.000000001", 1_700_000_000_000_000_001),
])
def test_timestamps(value: str, expected: int | None) -> None:
    assert times.unix_ns(value, "since") == expected


@pytest.mark.parametrize("value", ["yesterday", "1.2.3", "1.0123456789"])
def test_bad_timestamps(value: str) -> None:
    with pytest.raises(errors.InvalidArgument):
        times.unix_ns(value, "since")


def test_tail() -> None:
    assert parse_tail("all") is None and parse_tail("") is None and parse_tail("-1") is None
    assert parse_tail("2") == 2 and parse_tail("0") == 0
    with pytest.raises(errors.InvalidArgument):
        parse_tail("x")


def test_rfc3339nano_has_nine_digits() -> None:
    assert times.rfc3339_fixed(1_700_000_000_000_000_001) == "2023-11-14T22:13:20.000000001Z"


NET_DEV = "\n".join([
    "Inter-|   Receive                                                |  Transmit",
    " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier",
    "    lo:  100   1 0 0 0 0 0 0   100  1 0 0 0 0 0 0",
    "  eth0: 5000  40 1 2 0 0 0 0  3000 30 3 4 0 0 0 0",
])


def test_net_dev_skips_loopback() -> None:
    assert parse_net_dev(NET_DEV) == {"eth0": NetworkCounters(5000, 40, 1, 2, 3000, 30, 3, 4)}


def test_proc_stat_total_cpu_time() -> None:
    text = "cpu  10 20 30 40 50 60 70 80 0 0\ncpu0 1 1 1 1 1 1 1 0 0 0\n"
    assert parse_proc_stat(text) == (10 + 20 + 30 + 40 + 50 + 60 + 70) * 10_000_000


def test_blkio_v1_and_v2() -> None:
    assert parse_blkio("8:0 Read 4096\n8:0 Write 0\nTotal 4096\n") == (
        BlkioEntry(8, 0, "Read", 4096), BlkioEntry(8, 0, "Write", 0))
    service, ops = parse_io_stat("8:16 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0\n")
    assert service == (BlkioEntry(8, 16, "read", 10), BlkioEntry(8, 16, "write", 20))
    assert ops == (BlkioEntry(8, 16, "read", 1), BlkioEntry(8, 16, "write", 2))


PS = """UID          PID    PPID  C STIME TTY          TIME CMD
root           1       0  0 10:00 ?        00:00:01 /sbin/init splash
root        4242       1  0 10:01 ?        00:00:00 sleep 1000
root        4243       1  0 10:01 pts/0    00:00:00 sh -c echo  two  spaces
"""


def test_ps_filtered_to_the_container_last_column_keeps_spaces() -> None:
    top = parse_ps(PS, {4242, 4243})
    assert top.titles == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    assert [p[1] for p in top.processes] == ["4242", "4243"]
    assert top.processes[1][-1] == "sh -c echo  two  spaces"


def test_ps_without_pid_column() -> None:
    with pytest.raises(errors.InvalidArgument, match="PID"):
        parse_ps("USER COMMAND\nroot sh\n", {1})


def test_stats_render_docker_shape() -> None:
    cpu = CpuStats(1, 5_000, user_nano_seconds=3_000, system_nano_seconds=2_000, per_cpu_nano_seconds=(4_000, 1_000))
    memory = MemoryStats(1, usage_bytes=100, working_set_bytes=80, rss_bytes=50, cache_bytes=20, page_faults=0,
                         major_page_faults=0, limit_bytes=None, max_usage_bytes=120, stat={"cache": 20, "rss": 50})
    sample = Sample(read_ns=1_700_000_000_000_000_000, cgroup=ContainerStats("/c", cpu, memory, PidsStats(3)),
                    system_cpu_ns=9_000, online_cpus=2, host_memory=1 << 30,
                    io_service_bytes=(BlkioEntry(8, 0, "Read", 7),), networks={"eth0": NetworkCounters(rx_bytes=9)})
    body = render(sample, None, "abc", "/c1")
    assert body["cpu_stats"]["cpu_usage"] == {"total_usage": 5_000, "usage_in_kernelmode": 2_000,
                                              "usage_in_usermode": 3_000, "percpu_usage": [4_000, 1_000]}
    assert body["cpu_stats"]["system_cpu_usage"] == 9_000 and body["cpu_stats"]["online_cpus"] == 2
    assert body["precpu_stats"]["cpu_usage"]["total_usage"] == 0
    assert body["memory_stats"] == {"usage": 100, "max_usage": 120, "limit": 1 << 30,
                                    "stats": {"cache": 20, "rss": 50}}
    assert body["pids_stats"] == {"current": 3}
    assert body["blkio_stats"]["io_service_bytes_recursive"] == [{"major": 8, "minor": 0, "op": "Read", "value": 7}]
    assert body["networks"]["eth0"]["rx_bytes"] == 9
    assert body["name"] == "/c1" and body["id"] == "abc"
    assert body["read"] == "2023-11-14T22:13:20.000000000Z" and body["preread"] == "0001-01-01T00:00:00Z"


# ---- exec records (ExecManager over a store of core containers) ----

class _Containers:
    """The slice of ContainerService that ExecManager reads: the store, by ID or prefix."""

    def __init__(self) -> None:
        self.ctx = SimpleNamespace(containers=Store[ContainerMetadata, ContainerStatus]("container"),
                                   events=EventBus().domain(DOCKER_DOMAIN))

    def add(self, container_id: str, state: ContainerState) -> None:
        metadata = ContainerMetadata(id=container_id, sandbox_id="s", config=ContainerConfig(name="c", image="i"),
                                     image_id="sha256:x", image_ref="i", created_at=1)
        self.ctx.containers.add(container_id, metadata, ContainerStatus(state))

    def get(self, ref: str) -> tuple[ContainerMetadata, ContainerStatus]:
        return self.ctx.containers.get(ref)


def _manager() -> tuple[ExecManager, _Containers]:
    containers = _Containers()
    containers.add("a" * 64, ContainerState.RUNNING)
    containers.add("b" * 64, ContainerState.EXITED)
    return ExecManager(containers), containers  # type: ignore[arg-type]


async def test_exec_records_follow_their_container() -> None:
    manager, containers = _manager()
    instance = manager.create("aaaa", ExecConfig(cmd=("true",)))
    assert instance.container_id == "a" * 64 and manager.get(instance.id) is instance
    with pytest.raises(errors.Conflict, match=f"container {'b' * 64} is not running"):
        manager.create("b" * 64, ExecConfig(cmd=("true",)))
    with pytest.raises(errors.InvalidArgument, match="No exec command specified"):
        manager.create("a" * 64, ExecConfig(cmd=()))
    with pytest.raises(errors.NotFound, match="No such exec instance: nope"):
        manager.get("nope")
    containers.ctx.containers.delete("a" * 64)  # the container is removed: its execs go with it
    with pytest.raises(errors.NotFound, match=f"No such exec instance: {instance.id}"):
        manager.get(instance.id)
    assert manager.for_container("a" * 64) == []


async def test_exec_starts_once() -> None:
    manager, _ = _manager()
    instance = manager.create("a" * 64, ExecConfig(cmd=("true",)))
    assert manager.claim(instance.id).state == ExecState.RUNNING
    with pytest.raises(errors.Conflict, match="is already running"):
        manager.claim(instance.id)
    manager.unclaim(instance)  # the client went away before the process started: it may start again
    assert manager.claim(instance.id) is instance
    instance.state, instance.exit_code = ExecState.EXITED, 0
    with pytest.raises(errors.Conflict, match="has already run"):
        manager.claim(instance.id)


async def test_finished_exec_records_are_bounded_per_container() -> None:
    manager, _ = _manager()
    first = manager.create("a" * 64, ExecConfig(cmd=("true",)))
    first.state = ExecState.EXITED
    for _ in range(MAX_FINISHED_PER_CONTAINER):
        manager.create("a" * 64, ExecConfig(cmd=("true",))).state = ExecState.EXITED
    with pytest.raises(errors.NotFound):
        manager.get(first.id)  # the oldest finished record made room
    assert len(manager.for_container("a" * 64)) == MAX_FINISHED_PER_CONTAINER


async def test_exec_exit_is_answered_before_the_process_is_deleted(monkeypatch: pytest.MonkeyPatch) -> None:
    """The attached client gets its answer (and inspect the exit code) once the process exited and its output
    is relayed; deleting the process and its fifos goes on after that (issue 21, as moby)."""
    manager, containers = _manager()
    containers.ctx.client, containers.ctx.exec_dir, containers.ctx.process_specs = object(), Path("/x"), None
    containers.ctx.exec_exits = None
    deleting = asyncio.Event()
    deleted = asyncio.Event()

    async def fake_run_exec(client: object, container_id: str, cmd: list[str], streams: ExecStreams, *,
                            on_started: object, on_exit: object, **_: object) -> int:
        on_started(SimpleNamespace(pid=7))  # type: ignore[operator]
        on_exit(3)  # type: ignore[operator]
        deleting.set()
        await deleted.wait()  # DeleteProcess and the fifos' removal, still under way
        return 3

    monkeypatch.setattr(exec_view, "run_exec", fake_run_exec)
    instance = manager.claim(manager.create("a" * 64, ExecConfig(cmd=("sh", "-c", "exit 3"))).id)
    task, failed = manager.spawn(instance, ExecStreams(tty=False))
    await asyncio.wait_for(task, 10)
    assert (instance.state, instance.exit_code, instance.pid, failed) == (ExecState.EXITED, 3, 7, [])
    assert deleting.is_set() and not deleted.is_set()
    deleted.set()
    await manager.close()
    assert instance.exit_code == 3  # the deletion did not change what was recorded


async def test_exec_records_are_written_in_order_off_the_loop(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Each state change of a record is a file write in one writer thread (a loaded disk held the loop for
    milliseconds per exec, issue 21): in the order made, a removal after them wins, close() flushes, and a
    restart reads what was written."""
    containers = _Containers()
    containers.add("a" * 64, ContainerState.RUNNING)
    manager = ExecManager(containers, tmp_path)  # type: ignore[arg-type]
    writers: list[str] = []
    real_write = exec_records._write_record

    def write(path: Path, text: str) -> None:
        writers.append(threading.current_thread().name)
        real_write(path, text)

    monkeypatch.setattr(exec_records, "_write_record", write)
    kept = manager.create("a" * 64, ExecConfig(cmd=("sh", "-c", "exit 3")))
    manager.claim(kept.id)
    kept.state, kept.exit_code = ExecState.EXITED, 3
    manager._save(kept)
    gone = manager.create("a" * 64, ExecConfig(cmd=("true",)))
    manager._drop(gone.id)
    await manager.close()
    assert writers and all(name.startswith("exec-records") for name in writers)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{kept.id}.json"]
    again = ExecManager(containers, tmp_path)  # type: ignore[arg-type]
    record = again.get(kept.id)
    assert (record.state, record.exit_code, record.config.cmd) == (ExecState.EXITED, 3, ("sh", "-c", "exit 3"))
    await again.close()
    again._save(record)  # a late change after close (narwhald stopping) is dropped, not an error


# ---- attach before start (DockerAttach over the store and a CRI log file) ----

class _AttachContainers(_Containers):
    """The start and removal as ContainerService tells the run tracker about them."""

    def __init__(self) -> None:
        super().__init__()
        self.exited: dict[str, asyncio.Event] = {}
        self.runs = RunTracker()

    def exit_event(self, container_id: str) -> asyncio.Event:
        return self.exited.setdefault(container_id, asyncio.Event())

    async def set_state(self, container_id: str, state: ContainerState, started_at: int = 0) -> None:
        await self.ctx.containers.update(container_id, lambda s: dataclasses.replace(
            s, state=state, started_at=started_at or s.started_at))
        if state == ContainerState.RUNNING:
            self.runs.started(container_id, self.exit_event(container_id))

    async def remove(self, container_id: str) -> None:
        await self.runs.readers_done(container_id)
        self.runs.forget(container_id)
        self.ctx.containers.delete(container_id)


async def _next(output: object) -> tuple[str, bytes] | None:
    return await asyncio.wait_for(output.read(), 10)  # type: ignore[attr-defined]


async def test_attach_relays_the_run_that_starts_after_it(tmp_path: Path) -> None:
    containers = _AttachContainers()
    log_path = tmp_path / "c.log"
    metadata = ContainerMetadata(id="c" * 64, sandbox_id="s", config=ContainerConfig(name="c", image="i"),
                                 image_id="sha256:x", image_ref="i", created_at=1, log_path=str(log_path))
    containers.ctx.containers.add(metadata.id, metadata, ContainerStatus(ContainerState.CREATED))
    attach = DockerAttach(containers, metadata.id)  # type: ignore[arg-type]
    output = attach.subscribe()
    await asyncio.sleep(0.2)
    assert not output._task.done()  # waiting for the start, not ended
    await containers.set_state(metadata.id, ContainerState.RUNNING, started_at=time.time_ns())
    log_path.write_bytes(encode_line(time.time_ns(), "stdout", b"prompt# ", partial=True)
                         + encode_line(time.time_ns(), "stderr", b"oops"))
    assert await _next(output) == ("stdout", b"prompt# ")  # a partial record shows at once
    assert await _next(output) == ("stderr", b"oops\n")
    containers.exit_event(metadata.id).set()
    assert await _next(output) is None
    output.close()


async def test_attach_ends_when_the_container_is_removed_before_it_starts() -> None:
    containers = _AttachContainers()
    containers.add("d" * 64, ContainerState.CREATED)
    output = DockerAttach(containers, "d" * 64).subscribe()  # type: ignore[arg-type]
    await asyncio.wait_for(containers.remove("d" * 64), 5)  # nothing to wait for: no run was handed over
    assert await _next(output) is None
    output.close()


async def test_attach_gets_a_run_that_ends_and_is_removed_at_once(tmp_path: Path) -> None:
    """docker run --rm of a short command: start, exit and removal all before the attach's pump runs."""
    containers = _AttachContainers()
    log_path = tmp_path / "c.log"
    metadata = ContainerMetadata(id="e" * 64, sandbox_id="s", config=ContainerConfig(name="c", image="i"),
                                 image_id="sha256:x", image_ref="i", created_at=1, log_path=str(log_path))
    containers.ctx.containers.add(metadata.id, metadata, ContainerStatus(ContainerState.CREATED))
    output = DockerAttach(containers, metadata.id).subscribe()  # type: ignore[arg-type]
    await containers.set_state(metadata.id, ContainerState.RUNNING, started_at=time.time_ns())
    log_path.write_bytes(encode_line(time.time_ns(), "stdout", b"out") + encode_line(time.time_ns(), "stderr", b"err"))
    await containers.set_state(metadata.id, ContainerState.EXITED)
    containers.exit_event(metadata.id).set()
    removal = asyncio.ensure_future(containers.remove(metadata.id))
    await asyncio.sleep(0)
    assert not removal.done()  # held until the attach has the log open
    log_path_gone = asyncio.ensure_future(_unlink_after(removal, log_path))
    assert await _next(output) == ("stdout", b"out\n")
    assert await _next(output) == ("stderr", b"err\n")
    assert await _next(output) is None
    await asyncio.wait_for(log_path_gone, 5)
    output.close()


async def _unlink_after(removal: asyncio.Future[None], path: Path) -> None:
    await removal
    path.unlink()
