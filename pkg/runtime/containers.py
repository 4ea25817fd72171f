"""Containers: create, start, stop, remove, update, status, list — and the exit path.

How a container is made (snapshot, record with its final OCI spec, status) is
pkg.runtime.container_create.  Status transitions go through the store under
the container's lock and are checkpointed before they become visible.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import signal
import time
from collections.abc import Callable

from pkg import errors
from pkg import metrics as metrics_mod
from pkg.containerd import containers as ctr_containers
from pkg.containerd import snapshots as ctr_snapshots
from pkg.containerd import tasks as ctr_tasks
from pkg.events import ContainerEventType
from pkg.model.container import ContainerConfig, ContainerMetadata, ContainerStatus, Resources
from pkg.model.sandbox import NamespaceMode, SandboxMetadata
from pkg.model.state import ContainerState, SandboxState, check_container, transition
from pkg.runtime import checkpoint, container_create, container_io, container_release
from pkg.runtime import exec_sync as exec_sync_mod
from pkg.runtime.container_create import KIND as KIND  # re-exported: recovery lists records by it
from pkg.runtime.context import RuntimeContext
from pkg.runtime.exec import CLEANUP_TIMEOUT as EXEC_CLEANUP_TIMEOUT
from pkg.runtime.resources import CgroupFacts, merge_resources
from pkg.runtime.runs import RunTracker

log = logging.getLogger(__name__)

KILL_WAIT = 10.0  # how long to wait for the exit after SIGKILL
UNKNOWN_EXIT_CODE = 255


class ContainerService:
    def __init__(self, ctx: RuntimeContext) -> None:
        self.ctx = ctx
        self._exited: dict[str, asyncio.Event] = {}
        self._task_deleted: set[str] = set()  # exited here, task already deleted: a removal skips Kill/Delete
        self._oom: set[str] = set()
        # The rootfs mounts Prepare returned at create, for the first start (one Snapshots.Mounts round trip
        # less); a later start, or one after a restart, asks containerd.
        self._rootfs: dict[str, list[ctr_snapshots.Mount]] = {}
        self._images = container_create.ImageGuesses()  # reference -> the image it named at the last create
        self.runs = RunTracker()  # attached clients waiting for a start, readers holding the log
        # A front end's hook, called as soon as an exit is seen, before the task is deleted and the log drained
        # (the Docker engine starts an AutoRemove container's network teardown there, as moby releases the
        # network at the exit).  It must not block: start a task.
        self.on_exit: Callable[[str], None] | None = None

    # ---------------- create ----------------
    @metrics_mod.lifecycle("container", "create")
    async def create(self, sandbox_ref: str, config: ContainerConfig, container_id: str = "") -> str:
        """``container_id``: a caller-chosen 64-hex ID (a front end may name the sandbox's hostname after it)."""
        ctx = self.ctx
        if not config.name:
            raise errors.InvalidArgument("container config metadata.name must not be empty")
        if not config.image:
            raise errors.InvalidArgument("container config image must not be empty")
        sandbox_id = ctx.sandboxes.resolve(sandbox_ref)
        sandbox, sandbox_status = ctx.sandboxes.get(sandbox_id)
        if sandbox_status.state != SandboxState.READY:
            raise errors.FailedPrecondition(f"sandbox {sandbox_id} is not ready")
        await container_create.check_handler_features(ctx, config, sandbox.runtime_handler)
        # The image this reference named last time is a guess the creation starts from while the lookup (a
        # List/Images round trip) is on its way; it is checked before anything becomes visible, and a
        # reference that moved meanwhile rolls the creation back and makes it again from the lookup's image.
        lookup = asyncio.ensure_future(ctx.images.get(config.image))
        lookup.add_done_callback(container_create.retrieved)
        guess = self._images.get(config.image)
        image = guess or await lookup
        self._images.remember(config.image, image)
        container_id = container_id or secrets.token_hex(32)
        if ctx.containers.find(container_id) is not None:
            raise errors.AlreadyExists(f"container {container_id} already exists")
        target_pid = self._target_pid(config)
        try:
            metadata, mounts = await container_create.make(
                ctx, container_id, sandbox, sandbox_status.infra_pid, target_pid, config, image,
                lookup if guess is not None else None, self._images)
        except container_create.ImageMoved as moved:
            metadata, mounts = await container_create.make(
                ctx, container_id, sandbox, sandbox_status.infra_pid, target_pid, config, moved.image, None,
                self._images)
        self._rootfs[container_id] = mounts  # the first start's rootfs
        ctx.events.publish(container_id, sandbox.id, ContainerEventType.CREATED, metadata)
        return container_id

    def _target_pid(self, config: ContainerConfig) -> int:
        """PID of the running container whose PID namespace a TARGET-mode container joins."""
        ns = config.security.namespace_options
        if ns.pid != NamespaceMode.TARGET:
            return 0
        found = self.ctx.containers.find(ns.target_id) if ns.target_id else None
        if found is None or found[1].state != ContainerState.RUNNING:
            raise errors.NotFound(f"target container {ns.target_id!r} for the PID namespace is not running")
        return found[1].pid

    # ---------------- start ----------------
    @metrics_mod.lifecycle("container", "start")
    async def start(self, ref: str, *, again: bool = False) -> None:
        """``again``: an EXITED container may start once more with a new task on the same rootfs and log
        (a front end's start of a stopped container); CRI never passes it."""
        ctx = self.ctx
        container_id = ctx.containers.resolve(ref)
        async with ctx.containers.lock(container_id):
            metadata, status = ctx.containers.get(container_id)
            if not (again and status.state == ContainerState.EXITED):
                check_container(status.state, ContainerState.RUNNING, f"start {container_id}")
                if status.state != ContainerState.CREATED:
                    raise errors.FailedPrecondition(f"container {container_id} is {status.state.value}, not created")
            _, sandbox_status = ctx.sandboxes.get(metadata.sandbox_id)
            if sandbox_status.state != SandboxState.READY:
                raise errors.FailedPrecondition(f"sandbox {metadata.sandbox_id} is not ready")
            exited = self._exited[container_id] = asyncio.Event()
            self._task_deleted.discard(container_id)
            try:
                rootfs = self._rootfs.pop(container_id, None) or await ctr_snapshots.mounts(
                    ctx.client, metadata.snapshot_key)
                async with container_io.task_stdio(ctx, metadata) as stdio:
                    init_pid = await ctr_tasks.create(ctx.client, container_id, rootfs, stdin=stdio.stdin,
                                                      stdout=stdio.stdout, stderr=stdio.stderr,
                                                      terminal=metadata.config.tty)
                    container_io.widen_output_pipes(ctx, metadata, init_pid)
                    await stdio.ready()  # the log service registered the fifos (alongside Tasks.Create)
                    pid = await ctr_tasks.start(ctx.client, container_id)
            except BaseException as exc:
                await asyncio.shield(self._start_failed(container_id, exc))
                raise
            await self._update(container_id, lambda s: transition(
                s, ContainerState.RUNNING, f"start {container_id}", pid=pid, started_at=time.time_ns(), exit_code=0,
                reason="", message=""))
            self.runs.started(container_id, exited)  # under the lock: before its exit can be handled
        ctx.events.publish(container_id, metadata.sandbox_id, ContainerEventType.STARTED, metadata)

    async def _start_failed(self, container_id: str, exc: BaseException) -> None:
        """A failed start leaves the container EXITED with the reason, as containerd's CRI does."""
        self.ctx.stdin.close(container_id)
        await ctr_tasks.kill(self.ctx.client, container_id)
        await ctr_tasks.delete(self.ctx.client, container_id)
        self._task_deleted.add(container_id)
        # As at an exit: the fifos' reader (log service or logger) has seen their end before the start returns,
        # so a failed start leaves no registration behind for a removal that follows at once.
        await container_io.logger_exited(self.ctx, container_id)
        message = exc.message if isinstance(exc, errors.NarwhalError) else repr(exc)
        now = time.time_ns()
        await self._update(container_id, lambda s: transition(
            s, ContainerState.EXITED, f"start {container_id} failed", started_at=now, finished_at=now, exit_code=128,
            reason="StartError", message=message))

    # ---------------- stop ----------------
    @metrics_mod.lifecycle("container", "stop")
    async def stop(self, ref: str, timeout: float) -> None:
        """Stop signal, wait ``timeout`` seconds, then SIGKILL; idempotent on stopped containers."""
        ctx = self.ctx
        container_id = ctx.containers.resolve(ref)
        metadata, status = ctx.containers.get(container_id)
        if status.state not in (ContainerState.RUNNING, ContainerState.UNKNOWN):
            return
        exited = self.exit_event(container_id)
        if timeout > 0:
            await ctr_tasks.kill(ctx.client, container_id, _signal_number(metadata.stop_signal))
            try:
                await asyncio.wait_for(exited.wait(), timeout)
            except TimeoutError:
                pass
        if not exited.is_set():
            await ctr_tasks.kill(ctx.client, container_id, signal.SIGKILL, all_=True)
            try:
                await asyncio.wait_for(exited.wait(), KILL_WAIT)
            except TimeoutError:
                # The event stream may be down: ask containerd directly.
                await self.reconcile(container_id)
        _, status = ctx.containers.get(container_id)
        if status.state == ContainerState.RUNNING:
            raise errors.DeadlineExceeded(f"container {container_id} did not exit after SIGKILL")

    async def stop_all_in_sandbox(self, sandbox_id: str) -> None:
        ids = [cid for cid, m, _ in self.ctx.containers if m.sandbox_id == sandbox_id]
        await asyncio.gather(*(self._stop_if_there(cid) for cid in ids))

    async def _stop_if_there(self, container_id: str) -> None:
        """A container removed meanwhile (a front end removes it side by side with its sandbox) is stopped."""
        try:
            await self.stop(container_id, 0)
        except errors.NotFound:
            pass

    # ---------------- exits ----------------
    async def handle_exit(self, container_id: str, exit_status: int, exited_at_ns: int) -> None:
        """Called by the monitor for each init-process exit: delete the task, record EXITED."""
        ctx = self.ctx
        try:
            lock = ctx.containers.lock(container_id)  # waits out a start() that is still recording RUNNING
        except errors.NotFound:
            return
        async with lock:
            found = ctx.containers.find(container_id)
            if found is None:
                return
            metadata, status = found
            if status.state == ContainerState.EXITED:
                self._set_exited(container_id)
                return
            if self.on_exit is not None:
                try:
                    self.on_exit(container_id)
                except Exception:  # noqa: BLE001 - a front end's hook must not break the exit path
                    log.exception("exit hook of container %s failed", container_id[:12])
            # Before Tasks.Delete: runc removes the cgroup that holds the OOM-kill counter.
            oom = container_id in self._oom or container_io.oom_killed(metadata)
            await container_io.logger_running(ctx, metadata)  # the delete must not kill a logger still starting
            await ctr_tasks.delete(ctx.client, container_id)
            # The exit is the end of the output only once the logger has written its last record: every
            # follower of the exit event (attach, logs -f, wait + logs, AutoRemove) reads a complete log.
            await container_io.logger_exited(ctx, container_id)
            self._oom.discard(container_id)
            if oom:
                metrics_mod.current().oom_kills.labels(frontend=metrics_mod.frontend_of(ctx.domain)).inc()
                ctx.events.oom_killed(metadata)
            reason = "OOMKilled" if oom else ("Completed" if exit_status == 0 else "Error")
            await self._mark_exited(container_id, exit_status, exited_at_ns or time.time_ns(), reason, "")

    async def _mark_exited(self, container_id: str, code: int, finished: int, reason: str, message: str) -> None:
        """Called once the task is deleted (handle_exit) or found gone (reconcile)."""
        self._task_deleted.add(container_id)
        try:
            metadata, before = self.ctx.containers.get(container_id)
            await self._update(container_id, lambda s: transition(
                s, ContainerState.EXITED, f"exit of {container_id}", exit_code=code, finished_at=finished,
                reason=reason, message=message, pid=0))
        except errors.NotFound:
            self._task_deleted.discard(container_id)
            return
        self._set_exited(container_id)
        ran_for = max(0, finished - before.started_at) // 1_000_000_000 if before.started_at else 0
        self.ctx.events.publish(container_id, metadata.sandbox_id, ContainerEventType.STOPPED, metadata, code,
                                ran_for_s=ran_for)

    def handle_oom(self, container_id: str) -> None:
        self._oom.add(container_id)

    def exit_event(self, container_id: str) -> asyncio.Event:
        """Set once the container has exited (kept until it is removed)."""
        event = self._exited.get(container_id)
        if event is None:
            event = self._exited[container_id] = asyncio.Event()
            if self.ctx.containers.get(container_id)[1].state == ContainerState.EXITED:
                event.set()
        return event

    def _set_exited(self, container_id: str) -> None:
        self.ctx.stdin.close(container_id)
        self.exit_event(container_id).set()

    async def reconcile(self, container_id: str) -> None:
        """Bring a container's status in line with its containerd task (after restarts or lost events).

        Under the container's lock, as handle_exit: otherwise an exit handled meanwhile (task deleted,
        exit code recorded) looked like a vanished task and its exit code was overwritten with 255
        (seen as a `--rm` container running `true` exiting 255 about once in 25 runs, hack/bench)."""
        try:
            lock = self.ctx.containers.lock(container_id)
        except errors.NotFound:
            return
        stopped: ctr_tasks.TaskInfo | None = None
        async with lock:
            found = self.ctx.containers.find(container_id)
            if found is None or found[1].state not in (ContainerState.RUNNING, ContainerState.UNKNOWN):
                return
            task = await ctr_tasks.get(self.ctx.client, container_id)
            if task is None:
                # No task and no exit status to read: containerd's CRI reports exit code 255, "Unknown".
                await self._mark_exited(container_id, UNKNOWN_EXIT_CODE, time.time_ns(), "Unknown",
                                        "the container's task was gone when narwhald reconciled it")
            elif task.status == ctr_tasks.TaskStatus.STOPPED:
                stopped = task  # handle_exit takes the lock itself
            elif found[1].state == ContainerState.UNKNOWN:
                await self._update(container_id, lambda s: transition(
                    s, ContainerState.RUNNING, f"reconcile {container_id}", pid=task.pid,
                    started_at=s.started_at or time.time_ns()))
        if stopped is not None:
            await self.handle_exit(container_id, stopped.exit_status, stopped.exited_at_ns)

    # ---------------- remove ----------------
    @metrics_mod.lifecycle("container", "remove")
    async def remove(self, ref: str) -> None:
        """Stop if running, then remove task, record, snapshot and files; missing is success."""
        ctx = self.ctx
        try:
            container_id = ctx.containers.resolve(ref)
        except errors.NotFound:
            return
        metadata, status = ctx.containers.get(container_id)
        if status.state in (ContainerState.RUNNING, ContainerState.UNKNOWN):
            await self.stop(container_id, 0)
        await self.runs.readers_done(container_id)  # attached readers have the log open: it may go
        await exec_sync_mod.settle(container_id, EXEC_CLEANUP_TIMEOUT)  # answered ExecSyncs' processes and fifos
        async with ctx.containers.lock(container_id):
            if ctx.containers.find(container_id) is None:
                return
            self.runs.forget(container_id)
            ctx.process_specs.forget(container_id)
            self._rootfs.pop(container_id, None)
            # Never started, or its exit was handled here (task deleted or found gone): no Tasks.Kill/Delete
            # round trips on the removal (issue 21).  A container recovered as exited still gets them.
            _, status = ctx.containers.get(container_id)
            task_gone = status.state == ContainerState.CREATED or (
                status.state == ContainerState.EXITED and container_id in self._task_deleted)
            self._task_deleted.discard(container_id)
            await container_release.release_resources(ctx, metadata, task_gone=task_gone)
            ctx.stdin.close(container_id)
            self._exited.pop(container_id, None)
            ctx.containers.delete(container_id)
            ctx.containers.names.release(metadata.unique_name)
        ctx.events.publish(container_id, metadata.sandbox_id, ContainerEventType.DELETED, metadata)

    async def remove_all_in_sandbox(self, sandbox_id: str) -> None:
        ids = [cid for cid, m, _ in self.ctx.containers if m.sandbox_id == sandbox_id]
        await asyncio.gather(*(self.remove(cid) for cid in ids))

    # ---------------- update ----------------
    async def update_resources(self, ref: str, resources: Resources) -> None:
        ctx = self.ctx
        container_id = ctx.containers.resolve(ref)
        async with ctx.containers.lock(container_id):
            metadata, status = ctx.containers.get(container_id)
            if status.state == ContainerState.EXITED:
                raise errors.FailedPrecondition(f"container {container_id} has exited")
            record = await ctr_containers.get(ctx.client, container_id)
            spec = dict(record.spec)
            linux_spec = dict(spec.get("linux", {}))
            # Fields the update leaves unset (and the device rules) keep their current values.
            linux_spec["resources"] = merge_resources(linux_spec.get("resources", {}), resources, CgroupFacts.probe())
            spec["linux"] = linux_spec
            if status.state == ContainerState.RUNNING:
                await ctr_tasks.update_resources(ctx.client, container_id, linux_spec["resources"])
            await ctr_containers.update_spec(ctx.client, container_id, spec)
            await self._update(container_id, lambda s: dataclasses.replace(s, resources=resources))

    async def exec_sync(self, ref: str, cmd: list[str], timeout: float) -> exec_sync_mod.ExecResult:
        """Run ``cmd`` in the running container; bounded output; killed at ``timeout`` (0 = none)."""
        if not cmd:
            raise errors.InvalidArgument("exec command must not be empty")
        container_id = self.running_id(ref)
        return await exec_sync_mod.exec_sync(self.ctx.client, container_id, cmd, fifo_root=self.ctx.exec_dir,
                                             timeout=timeout or None, specs=self.ctx.process_specs,
                                             exits=self.ctx.exec_exits)

    def running_id(self, ref: str) -> str:
        """The full ID of a running container (FailedPrecondition when it is not running)."""
        metadata, status = self.ctx.containers.get(ref)
        if status.state != ContainerState.RUNNING:
            raise errors.FailedPrecondition(f"container {metadata.id} is not running ({status.state.value})")
        return metadata.id

    async def reopen_log(self, ref: str) -> None:
        """ReopenContainerLog: the logger reopens its file (after kubelet rotated it)."""
        metadata, status = self.ctx.containers.get(ref)
        if status.state != ContainerState.RUNNING:
            raise errors.FailedPrecondition(f"container {metadata.id} is not running")
        if metadata.log_path:
            await container_io.reopen_log(self.ctx, metadata)

    # ---------------- queries ----------------
    def get(self, ref: str) -> tuple[ContainerMetadata, ContainerStatus]:
        return self.ctx.containers.get(ref)

    def list(self) -> list[tuple[ContainerMetadata, ContainerStatus]]:
        return [(m, s) for _, m, s in self.ctx.containers]

    async def _update(self, container_id: str, fn: Callable[[ContainerStatus], ContainerStatus]) -> ContainerStatus:
        ctx = self.ctx

        async def persist(new: ContainerStatus) -> None:
            checkpoint.write(ctx.container_root(container_id), new)

        return await ctx.containers.update(container_id, fn, persist)


def _signal_number(name: str) -> int:
    if not name:
        return int(signal.SIGTERM)
    name = name.upper()
    if (name.isascii() and name.isdigit()):
        return int(name)
    try:
        return int(signal.Signals[name if name.startswith("SIG") else f"SIG{name}"])
    except (KeyError, ValueError):
        return int(signal.SIGTERM)


__all__ = ["ContainerService", "SandboxMetadata"]
