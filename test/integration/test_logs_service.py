"""The log service (pkg.logs.service) as narwhald runs it, with this test in the shim's place: fifos whose write
end and spare read end the "shim" holds, many containers at once, kill -9 of the service mid-stream, rotation,
ReopenContainerLog, the stats file.  No containerd needed (test_logs_service_daemon.py runs it under narwhald)."""
from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from lib.logger import streams_of
from lib.wait import async_wait_for

from pkg import errors
from pkg.logs.criformat import decode_line
from pkg.logs.service import StreamSpec
from pkg.logs.service_client import LogService, service_pid
from pkg.logs.writer import read_stats_file


class Shim:
    """What containerd's runc v2 shim holds of one output fifo (pkg/process/io.go): a write end it copies the
    container's output into, and a read end it never reads, so writes never get EPIPE while no reader runs."""

    def __init__(self, fifo: Path) -> None:
        self.r = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        self.w = os.open(fifo, os.O_WRONLY)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.w, view):]

    def close(self) -> None:
        for fd in (self.w, self.r):
            os.close(fd)


@contextlib.asynccontextmanager
async def running_service(tmp_path: Path) -> AsyncIterator[LogService]:
    svc = LogService(tmp_path / "svc", tmp_path / "bin")
    await svc.ensure_started()
    try:
        yield svc
    finally:
        assert await svc.stop()
        assert service_pid(svc.dir) is None


async def register(svc: LogService, base: Path, key: str, *, tty: bool = False, **opts: int | bool) -> list[Shim]:
    directory = base / key
    directory.mkdir(parents=True)
    fifos = [directory / "stdout"] + ([] if tty else [directory / "stderr"])
    for fifo in fifos:
        os.mkfifo(fifo, 0o600)
    shims = [Shim(f) for f in fifos]
    spec = StreamSpec(path=str(directory / "c.log"), stdout=str(fifos[0]), stderr="" if tty else str(fifos[1]),
                      stats=str(directory / "stats"), **opts)  # type: ignore[arg-type]
    await svc.add(key, spec)
    return shims



def record_count(log: Path) -> int:
    return log.read_bytes().count(b"\n") if log.exists() else 0


async def test_many_containers_byte_for_byte(tmp_path: Path) -> None:
    async with running_service(tmp_path) as svc:
        expected: dict[str, dict[str, bytes]] = {}
        shims: dict[str, list[Shim]] = {}
        for n in range(12):
            key = f"cri-c{n}"
            shims[key] = await register(svc, tmp_path, key)
            expected[key] = {
                "stdout": b"".join(b"%s out %d\n" % (key.encode(), i) for i in range(300))
                + b"x" * 40_000 + b"\n" + b"tail without newline",  # a line past max-line: P chunks, then F
                "stderr": b"".join(b"%s err %d \xff\n" % (key.encode(), i) for i in range(150)) + b"\n\n",
            }

        def write_all(key: str) -> None:
            out, err = shims[key]
            for stream, shim in (("stdout", out), ("stderr", err)):
                data = expected[key][stream]
                for at in range(0, len(data), 4093):  # chunks that cut lines anywhere
                    shim.write(data[at:at + 4093])
            out.close()
            err.close()

        await asyncio.gather(*(asyncio.to_thread(write_all, key) for key in expected))
        for key in expected:
            assert await svc.wait_done(f"{key}", 20), f"{key}: streams not done"
            log = tmp_path / key / "c.log"
            assert streams_of(log) == expected[key]
            stats = read_stats_file(str(tmp_path / key / "stats"))
            assert stats is not None and stats[0] == log.stat().st_size and stats[1] == record_count(log)
        assert list((svc.dir / "streams").iterdir()) == []  # registrations go once done


async def test_service_killed_mid_stream_loses_nothing(tmp_path: Path) -> None:
    async with running_service(tmp_path) as svc:
        out, err = await register(svc, tmp_path, "cri-k")
        log = tmp_path / "cri-k" / "c.log"
        lines = [b"n=%06d\n" % i for i in range(600)]
        for line in lines[:200]:
            out.write(line)
        await async_wait_for(lambda: record_count(log) == 200, 20, "200 records")
        first = svc.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        await async_wait_for(lambda: service_pid(svc.dir) is None, 20, "the service gone")
        for line in lines[200:400]:  # no reader but the shim's own read end: no EPIPE, the fifo keeps it
            out.write(line)
        assert record_count(log) == 200
        assert not await svc.ensure_started()  # a new instance re-opens the registered fifos
        await async_wait_for(lambda: record_count(log) == 400, 20, "the buffered records")

        # The watcher restarts a service that dies on its own.
        watcher = asyncio.create_task(svc.watch())
        try:
            second = svc.pid
            assert second is not None and second != first
            os.kill(second, signal.SIGKILL)
            await async_wait_for(lambda: service_pid(svc.dir) not in (None, second), 20, "a restarted service")
            for line in lines[400:]:
                out.write(line)
            out.close()
            err.close()
            assert await svc.wait_done("cri-k", 20)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        assert svc.restarts == 1
        assert streams_of(log) == {"stdout": b"".join(lines), "stderr": b""}


async def test_rotation_reopen_and_tty(tmp_path: Path) -> None:
    async with running_service(tmp_path) as svc:
        (out,) = await register(svc, tmp_path, "docker-r", tty=True, max_size=300, max_files=3)
        log = tmp_path / "docker-r" / "c.log"
        lines = [b"rotating line %03d ........\n" % i for i in range(40)]
        for line in lines:
            out.write(line)
        out.close()
        assert await svc.wait_done("docker-r", 20)
        kept = [log.with_name("c.log.2"), log.with_name("c.log.1"), log]
        assert all(p.exists() and p.stat().st_size <= 300 for p in kept)
        assert not log.with_name("c.log.3").exists()
        tail = streams_of(*kept)
        assert tail["stderr"] == b"" and b"".join(lines).endswith(tail["stdout"]) and tail["stdout"].endswith(lines[-1])

        out, err = await register(svc, tmp_path, "cri-reopen")
        log = tmp_path / "cri-reopen" / "c.log"
        out.write(b"before\n")
        await async_wait_for(lambda: record_count(log) == 1, 20, "the first record")
        log.rename(log.with_name("c.log.old"))  # the kubelet rotates, then asks for ReopenContainerLog
        await svc.reopen("cri-reopen")
        assert log.exists()
        err.write(b"after\n")
        out.close()
        err.close()
        assert await svc.wait_done("cri-reopen", 20)
        assert streams_of(log.with_name("c.log.old")) == {"stdout": b"before\n", "stderr": b""}
        assert streams_of(log) == {"stdout": b"", "stderr": b"after\n"}

        # Streams that ended: no reopen (containerd: FailedPrecondition), and waiting is over at once.
        with pytest.raises(errors.FailedPrecondition):
            await svc.reopen("cri-reopen")
        assert await svc.wait_done("cri-unknown", 1)
        with pytest.raises(errors.InvalidArgument):
            await svc.add("../escape", StreamSpec(path=str(log), stdout=str(log)))


async def test_adopted_after_its_starter_is_gone(tmp_path: Path) -> None:
    """A second LogService on the same dir (the next narwhald after a kill -9) adopts the running service."""
    async with running_service(tmp_path) as svc:
        out, err = await register(svc, tmp_path, "cri-a")
        out.write(b"one\n")
        other = LogService(svc.dir, tmp_path / "bin")
        assert await other.ensure_started()
        assert other.pid == svc.pid
        await other.reopen("cri-a")
        out.write(b"two\n")
        out.close()
        err.close()
        assert await other.wait_done("cri-a", 20)
        assert streams_of(tmp_path / "cri-a" / "c.log")["stdout"] == b"one\ntwo\n"


async def test_unterminated_lines_flushed_while_others_write(tmp_path: Path) -> None:
    """A prompt without a newline is written as a P record once its stream has been quiet ~100 ms, also while
    another container keeps the loop busy (the loop's flush looks only at the streams holding an unterminated
    line: each one must be in that set), and the stream goes on with F records after it."""
    async with running_service(tmp_path) as svc:
        quiet_out, quiet_err = await register(svc, tmp_path, "cri-quiet")
        busy_out, busy_err = await register(svc, tmp_path, "cri-busy")
        quiet_log, busy_log = tmp_path / "cri-quiet" / "c.log", tmp_path / "cri-busy" / "c.log"

        def records(log: Path) -> list[tuple[str, bool, bytes]]:
            if not log.exists():
                return []
            return [(r.stream, r.partial, r.content) for r in map(decode_line, log.read_bytes().splitlines())]

        stop = asyncio.Event()

        async def busy() -> int:
            i = 0
            while not stop.is_set():
                busy_out.write(b"busy %d\n" % i)
                i += 1
                await asyncio.sleep(0.002)
            return i

        writer = asyncio.create_task(busy())
        try:
            quiet_out.write(b"prompt> ")
            await async_wait_for(lambda: records(quiet_log) == [("stdout", True, b"prompt> ")], 20, "the P record")
            quiet_out.write(b"typed\n")
            await async_wait_for(lambda: len(records(quiet_log)) == 2, 20, "the F record")
        finally:
            stop.set()
            written = await writer
        for shim in (quiet_out, quiet_err, busy_out, busy_err):
            shim.close()
        assert await svc.wait_done("cri-quiet", 20) and await svc.wait_done("cri-busy", 20)
        assert records(quiet_log) == [("stdout", True, b"prompt> "), ("stdout", False, b"typed")]
        assert records(busy_log) == [("stdout", False, b"busy %d" % i) for i in range(written)]
