"""Docker exec instances: created, started once (attached or detached), inspected, resized.

Docker splits exec into create (an ID and a config), start and inspect, so
unlike CRI's one-shot exec the instance outlives its process: the exit code
stays readable until the container is removed (records of removed
containers are dropped when next looked at).  With a records dir, each
instance is also a small JSON file there, so ``docker exec inspect`` still
answers after narwhald restarts (an exec that was running then is shown
exited, its exit code unknown unless narwhald ended it itself).  The process itself is
``pkg.runtime.exec``'s; Docker's options (env, working dir, user,
privileged, console size) edit its process spec.
"""
from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pkg import errors
from pkg.aio import create_guarded_task
from pkg.docker.events import docker_events
from pkg.docker.views.exec_records import ExecRecords
from pkg.model.state import ContainerState
from pkg.runtime import caps
from pkg.runtime.containers import ContainerService
from pkg.runtime.exec import ExecProcess, ProcessAdjust, run_exec
from pkg.runtime.user import resolve_user
from pkg.streaming.backend import ExecStreams

log = logging.getLogger(__name__)

RESIZE_WAIT = 10.0  # as moby: a resize may arrive before the process has started
CLOSE_TIMEOUT = 15.0
MAX_FINISHED_PER_CONTAINER = 256  # health checks exec often: keep the newest finished records only


class ExecState(enum.Enum):
    CREATED = "created"
    RUNNING = "running"
    EXITED = "exited"


@dataclass(frozen=True)
class ExecConfig:
    cmd: tuple[str, ...]
    env: tuple[str, ...] = ()
    working_dir: str = ""
    user: str = ""
    tty: bool = False
    attach_stdin: bool = False
    attach_stdout: bool = False
    attach_stderr: bool = False
    privileged: bool = False
    detach_keys: str = ""
    console_size: tuple[int, int] | None = None  # (height, width)


@dataclass
class ExecInstance:
    id: str
    container_id: str
    config: ExecConfig
    created_at: int = field(default_factory=time.time_ns)
    state: ExecState = ExecState.CREATED
    exit_code: int | None = None
    pid: int = 0
    _process: ExecProcess | None = None
    _started: asyncio.Event = field(default_factory=asyncio.Event)
    _exited: asyncio.Event = field(default_factory=asyncio.Event)  # its exit code is recorded

    @property
    def running(self) -> bool:
        return self.state == ExecState.RUNNING

    @property
    def open_stdin(self) -> bool:
        return self.config.attach_stdin


def adjust_process(process: dict[str, Any], config: ExecConfig, user: dict[str, Any] | None,
                   privileged_caps: Sequence[str] = ()) -> dict[str, Any]:
    """The container's process spec edited by Docker's exec options (pure, for tests)."""
    process = dict(process)
    if config.env:
        env = list(process.get("env") or [])
        for entry in config.env:
            key = entry.split("=", 1)[0]
            env = [e for e in env if e.split("=", 1)[0] != key]
            env.append(entry)
        process["env"] = env
    if config.working_dir:
        process["cwd"] = config.working_dir
    if user is not None:
        process["user"] = {**(process.get("user") or {}), **user}
    if config.privileged:
        all_caps = list(privileged_caps)
        process["capabilities"] = {"bounding": all_caps, "effective": all_caps, "permitted": all_caps}
        process.pop("apparmorProfile", None)
        process.pop("selinuxLabel", None)
    if config.tty and config.console_size is not None:
        height, width = config.console_size
        if height > 0 and width > 0:
            process["consoleSize"] = {"height": height, "width": width}
    return process


def _command_line(cmd: Sequence[str]) -> str:
    """The command as moby's exec events spell it: entrypoint, a space, the arguments joined by spaces."""
    return f"{cmd[0]} {' '.join(cmd[1:])}"


def start_failure_code(err: errors.NarwhalError) -> int:
    """moby's exit codes for a process that could not start: 127 when the command is missing, else 126."""
    text = err.message.lower()
    return 127 if "executable file not found" in text or "no such file or directory" in text else 126


class ExecManager:
    """The Docker domain's exec instances, tied to its containers."""

    def __init__(self, containers: ContainerService, records_dir: Path | None = None) -> None:
        self._containers = containers
        self._execs: dict[str, ExecInstance] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._records = ExecRecords(records_dir) if records_dir is not None else None
        if self._records is not None:
            self._load(self._records.directory)

    # ---- persistence (what a record holds; pkg.docker.views.exec_records writes it) ----
    def _load(self, directory: Path) -> None:
        """The records of a previous run, for containers that still exist; a RUNNING one's process did not
        survive narwhald with it attached, so it is EXITED now."""
        for path in directory.glob("*.json"):
            try:
                raw = json.loads(path.read_text())
                instance = ExecInstance(
                    str(raw["id"]), str(raw["container_id"]),
                    ExecConfig(**{**raw["config"], "cmd": tuple(raw["config"]["cmd"]),
                                  "env": tuple(raw["config"]["env"]),
                                  "console_size": tuple(raw["config"]["console_size"])
                                  if raw["config"].get("console_size") else None}),
                    created_at=int(raw["created_at"]), state=ExecState(raw["state"]),
                    exit_code=raw.get("exit_code"), pid=int(raw.get("pid") or 0))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("dropping unreadable exec record %s: %r", path.name, exc)
                path.unlink(missing_ok=True)
                continue
            if self._containers.ctx.containers.find(instance.container_id) is None:
                path.unlink(missing_ok=True)
                continue
            if instance.state == ExecState.RUNNING:
                instance.state = ExecState.EXITED
                self._save(instance)
            instance._started.set()
            instance._exited.set()
            self._execs[instance.id] = instance

    def _save(self, instance: ExecInstance) -> None:
        if self._records is None:
            return
        c = instance.config
        raw = {"id": instance.id, "container_id": instance.container_id, "created_at": instance.created_at,
               "state": instance.state.value, "exit_code": instance.exit_code, "pid": instance.pid,
               "config": {"cmd": list(c.cmd), "env": list(c.env), "working_dir": c.working_dir, "user": c.user,
                          "tty": c.tty, "attach_stdin": c.attach_stdin, "attach_stdout": c.attach_stdout,
                          "attach_stderr": c.attach_stderr, "privileged": c.privileged,
                          "detach_keys": c.detach_keys,
                          "console_size": list(c.console_size) if c.console_size else None}}
        self._records.save(instance.id, json.dumps(raw))

    def _drop(self, exec_id: str) -> None:
        self._execs.pop(exec_id, None)
        if self._records is not None:
            self._records.drop(exec_id)

    async def flush(self) -> None:
        """Until every record change made so far is on disk."""
        if self._records is not None:
            await self._records.flush()

    # ---- records ----
    def create(self, container_ref: str, config: ExecConfig) -> ExecInstance:
        if not config.cmd:
            raise errors.InvalidArgument("No exec command specified")
        container_id = self._running(container_ref)
        self._prune(container_id)
        instance = ExecInstance(secrets.token_hex(32), container_id, config)
        self._execs[instance.id] = instance
        self._save(instance)
        self._event(instance, "exec_create: " + _command_line(config.cmd))
        return instance

    def _event(self, instance: ExecInstance, action: str, **extra: str) -> None:
        """moby's exec events: ``exec_create: CMD``, ``exec_start: CMD`` and ``exec_die``, each with execID."""
        found = self._containers.ctx.containers.find(instance.container_id)
        if found is not None:
            docker_events(self._containers.ctx.events).container(action, found[0], execID=instance.id, **extra)

    def get(self, exec_id: str) -> ExecInstance:
        instance = self._execs.get(exec_id)
        if instance is not None and self._containers.ctx.containers.find(instance.container_id) is None:
            self._forget_container(instance.container_id)
            instance = None
        if instance is None:
            raise errors.NotFound(f"No such exec instance: {exec_id}")
        return instance

    def for_container(self, container_id: str) -> list[str]:
        return [i.id for i in self._execs.values() if i.container_id == container_id]

    def _running(self, container_ref: str) -> str:
        metadata, status = self._containers.get(container_ref)
        if status.state != ContainerState.RUNNING:
            raise errors.Conflict(f"container {metadata.id} is not running")
        return metadata.id

    def _forget_container(self, container_id: str) -> None:
        for exec_id in self.for_container(container_id):
            self._drop(exec_id)

    def _prune(self, container_id: str) -> None:
        gone = {i.container_id for i in self._execs.values()
                if self._containers.ctx.containers.find(i.container_id) is None}
        for cid in gone:
            self._forget_container(cid)
        finished = sorted((i for i in self._execs.values()
                           if i.container_id == container_id and i.state == ExecState.EXITED),
                          key=lambda i: i.created_at)
        for instance in finished[:max(0, len(finished) - MAX_FINISHED_PER_CONTAINER + 1)]:
            self._drop(instance.id)

    # ---- start ----
    def claim(self, exec_id: str) -> ExecInstance:
        """Check that the exec can start and mark it running (before the connection is hijacked)."""
        instance = self.get(exec_id)
        if instance.state == ExecState.RUNNING:
            raise errors.Conflict(f"Error: Exec command {exec_id} is already running")
        if instance.state == ExecState.EXITED:
            raise errors.Conflict(f"Error: Exec command {exec_id} has already run")
        self._running(instance.container_id)
        instance.state = ExecState.RUNNING
        self._save(instance)
        return instance

    def unclaim(self, instance: ExecInstance) -> None:
        """A claimed exec whose start never happened (the client went away first) may start again."""
        if instance.state == ExecState.RUNNING and not instance._started.is_set():
            instance.state = ExecState.CREATED
            self._save(instance)

    async def run(self, instance: ExecInstance, streams: ExecStreams) -> int:
        """Run a claimed exec with ``streams`` until it exits; its exit code (also kept on the record).

        A process that cannot start gets moby's 126/127 and the error is raised.
        Cancelling kills the process.
        """
        ctx = self._containers.ctx

        def exited(code: int) -> None:
            """Record the exit (once): from here on inspect shows it and the attached client may go, while
            the process and its fifos are still being deleted."""
            if instance._exited.is_set():
                return
            instance.exit_code = code
            instance.state = ExecState.EXITED
            instance._process = None
            if instance._started.is_set():  # a process that ran (moby: the exit event of the exec)
                self._event(instance, "exec_die", exitCode=str(code))
            instance._started.set()
            self._save(instance)
            instance._exited.set()

        try:
            adjust = await self._adjuster(instance)

            def started(proc: ExecProcess) -> None:
                instance._process = proc
                instance.pid = proc.pid
                instance._started.set()
                # Not saved here: the claim saved it running (after a restart it shows exited either way) and
                # the exit saves it with its pid; each save is a file write on the loop (issue 21).

            self._event(instance, "exec_start: " + _command_line(instance.config.cmd))
            code = await run_exec(ctx.client, instance.container_id, list(instance.config.cmd), streams,
                                  fifo_root=ctx.exec_dir, adjust=adjust, on_started=started, on_exit=exited,
                                  specs=ctx.process_specs, exits=ctx.exec_exits)
        except errors.NarwhalError as err:
            if instance._exited.is_set():  # it ran and exited; only deleting it failed
                log.warning("exec %s in %s: deleting the process: %s", instance.id[:12], instance.container_id[:12],
                            err.message)
                assert instance.exit_code is not None
                return instance.exit_code
            exited(start_failure_code(err) if not instance._started.is_set() else 137)
            raise
        except BaseException:
            exited(137 if instance._started.is_set() else 126)
            raise
        exited(code)  # (recorded already, before the process was deleted)
        log.debug("exec %s in %s exited with %d", instance.id[:12], instance.container_id[:12], code)
        return code

    def spawn(self, instance: ExecInstance, streams: ExecStreams) -> tuple[asyncio.Task[None], list[BaseException]]:
        """Run a claimed exec in a background task (``close()`` cancels it, killing the process); the
        list receives the error of a process that could not start.  The task handed back ends once the exit is
        recorded (the process is deleted after that, in the background); cancelling it before then kills the
        process."""
        failed: list[BaseException] = []

        async def body() -> None:
            try:
                await self.run(instance, streams)
            except errors.NarwhalError as err:
                failed.append(err)

        runner = create_guarded_task(body, f"docker-exec-{instance.id[:12]}")
        self._tasks.add(runner)
        runner.add_done_callback(self._tasks.discard)

        async def until_exited() -> None:
            recorded = asyncio.ensure_future(instance._exited.wait())
            try:
                await asyncio.wait([runner, recorded], return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                if not instance._exited.is_set():
                    runner.cancel()  # the client went away: the process is killed and deleted
                raise
            finally:
                recorded.cancel()

        return asyncio.ensure_future(until_exited()), failed

    async def run_detached(self, instance: ExecInstance) -> None:
        """Start a claimed exec in the background (output discarded); returns once it has started."""
        task, failed = self.spawn(instance, ExecStreams(tty=instance.config.tty))
        waiter = asyncio.ensure_future(instance._started.wait())
        await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiter
        if failed:
            raise failed[0]

    async def close(self) -> None:
        """At shutdown: end the exec processes still running (their records stay, exited with 137)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=CLOSE_TIMEOUT)
        if self._records is not None:
            await self._records.close()

    async def _adjuster(self, instance: ExecInstance) -> ProcessAdjust:
        """Docker's options as an edit of the process spec (the user is resolved in the container's rootfs)."""
        config = instance.config
        user: dict[str, Any] | None = None
        if config.user:
            _, status = self._containers.get(instance.container_id)
            rootfs = Path(f"/proc/{status.pid}/root") if status.pid else None
            ids = await asyncio.to_thread(resolve_user, rootfs, config.user)
            user = {"uid": ids.uid, "gid": ids.gid, "additionalGids": list(ids.additional_gids)}
        privileged = caps.container_caps(privileged=True, available=caps.current_effective_caps()) \
            if config.privileged else []

        def adjust(process: dict[str, Any]) -> dict[str, Any]:
            return adjust_process(process, config, user, privileged)

        return adjust

    # ---- resize ----
    async def resize(self, exec_id: str, height: int, width: int) -> None:
        instance = self.get(exec_id)
        if height < 0 or width < 0:
            raise errors.InvalidArgument("resize dimensions must not be negative")
        if instance.state == ExecState.CREATED:
            try:
                await asyncio.wait_for(instance._started.wait(), RESIZE_WAIT)
            except TimeoutError:
                raise errors.DeadlineExceeded("timeout waiting for exec session ready") from None
        process = instance._process
        if process is None:
            if instance.state == ExecState.EXITED:
                raise errors.Conflict(f"Exec {exec_id} is not running")
            return
        await process.resize(width, height)
