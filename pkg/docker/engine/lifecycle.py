"""Start, stop, kill, restart, pause, unpause and wait of Docker containers, and what happens after an
exit: waiters are woken, the restart policy is applied (moby's restartmanager), AutoRemove removes.

Every running container has one guarded watcher task that waits for the core's exit of its current task.
A restart gives the same core container a new task (same ID, rootfs and log).
"""
from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable

from pkg import errors
from pkg.aio import create_guarded_task
from pkg.containerd import tasks as ctr_tasks
from pkg.containerd.api.services.tasks.v1 import tasks_pb2
from pkg.containerd.client import Client
from pkg.containerd.errors import translate
from pkg.docker.engine.health import HealthMonitor
from pkg.docker.engine.model import EngineRecord, Health, HealthStatus, RestartPolicyName, WaitCondition, WaitResult
from pkg.docker.engine.registry import Registry
from pkg.docker.engine.signals import parse_signal, stop_sequence
from pkg.docker.events import docker_events
from pkg.docker.volumes.model import MountType
from pkg.model.state import ContainerState, DockerState, IllegalTransition
from pkg.runtime.containers import ContainerService

log = logging.getLogger(__name__)

DEFAULT_STOP_TIMEOUT = 10
KILL_WAIT = 10  # seconds a kill with SIGKILL waits for the exit (moby waits as long)
BACKOFF_START = 0.1  # moby: 100 ms, doubled after each restart ...
BACKOFF_MAX = 60.0  # ... up to a minute,
BACKOFF_RESET_AFTER = 10.0  # and back to 100 ms once a container stayed up this long


class Lifecycle:
    def __init__(self, registry: Registry, containers: ContainerService, client: Client,
                 remove: Callable[[str], Awaitable[None]]) -> None:
        self.registry = registry
        self.containers = containers
        self.client = client
        self._remove = remove  # the engine's forced remove, for AutoRemove
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._waiters: dict[str, list[tuple[WaitCondition, asyncio.Future[WaitResult]]]] = {}
        self._backoff: dict[str, float] = {}
        self._restart_timers: dict[str, asyncio.Task[None]] = {}
        self.health = HealthMonitor(containers, self._health_changed, self._record_health)
        # (sandbox ID, "connect"/"disconnect", network mode): the network events of a start and an exit
        # (NetworkService's container_events), wired by the daemon when Docker networks exist.
        self.network_events: Callable[[str, str, str], None] | None = None

    async def _record_health(self, container_id: str, health: Health) -> None:
        await self.registry.update_state(container_id, health=health)

    def _health_changed(self, container_id: str, status: HealthStatus) -> None:
        self.event(f"health_status: {status.value}", container_id)

    def event(self, action: str, container_id: str, **extra: str) -> None:
        """A Docker container event the core does not publish itself (pause, kill, restart, rename, ...)."""
        found = self.containers.ctx.containers.find(container_id)
        if found is not None:
            docker_events(self.containers.ctx.events).container(action, found[0], **extra)

    def unmounts(self, container_id: str) -> None:
        """The volume ``unmount`` events of an exit (moby's Cleanup, before it logs \"die\")."""
        record = self.registry.find(container_id)
        if record is not None:
            self._network_events(record, "disconnect")  # releaseNetwork comes first in moby's Cleanup
            self._volume_events(record, "unmount")

    def _network_events(self, record: EngineRecord, action: str) -> None:
        """Only the sandbox's owner logs them (``--network container:X`` joins X's endpoints, it has none)."""
        if self.network_events is not None and record.owns_sandbox:
            self.network_events(record.sandbox_id, action, record.host_config.network_mode)

    def _volume_events(self, record: EngineRecord, action: str) -> None:
        """moby's volume ``mount`` (at each start) and ``unmount`` (at each exit) of the container's volumes."""
        bus = self.containers.ctx.events.bus
        for mp in record.mount_points:
            if mp.type is not MountType.VOLUME:
                continue
            attributes = {"driver": mp.driver, "container": record.id}
            if action == "mount":
                attributes.update({"destination": mp.destination, "read/write": str(mp.rw).lower(),
                                   "propagation": mp.propagation})
            bus.publish_docker("volume", action, mp.name, attributes)

    def close(self) -> list[asyncio.Task[None]]:
        """Shutting down: waiters are let go (their clients see an error) and the tasks are handed back to cancel."""
        for waiters in self._waiters.values():
            for _, future in waiters:
                future.cancel()
        self._waiters.clear()
        tasks = [*self._watchers.values(), *self._restart_timers.values(), *self.health.close()]
        self._watchers.clear()
        self._restart_timers.clear()
        return tasks

    # ---------------- start ----------------
    async def start(self, ref: str) -> bool:
        """Start; False when it was running already (Docker answers 304)."""
        container_id = self.registry.resolve(ref)
        async with self.registry.lock(container_id):
            record = self.registry.get(container_id)
            _, status = self.containers.get(container_id)
            if record.state.removing:
                raise errors.Conflict(f"container {container_id} is marked for removal and cannot be started")
            if status.state == ContainerState.RUNNING:
                if record.state.paused:
                    raise errors.Conflict("cannot start a paused container, try unpause instead")
                return False
            self._cancel_restart(container_id)
            await self.registry.transition(container_id, None, manually_stopped=False)  # a restarting stops
            await self._start_task(container_id)
            return True

    async def _start_task(self, container_id: str) -> None:
        """The core start (a new task for a container that ran before); called with the lock held."""
        record = self.registry.get(container_id)
        _, status = self.containers.get(container_id)
        self._network_events(record, "connect")  # moby: initializeNetworking, before the mounts and "start"
        self._volume_events(record, "mount")  # moby: while the start sets up the mounts, before "start"
        # "Started once" holds whether the start succeeds or fails, so its (fsync'd) write runs side by side
        # with the start instead of after it; a failure then records its error over it.
        marked: asyncio.Task[EngineRecord] | None = None
        if not record.state.started_once or record.state.error:
            marked = asyncio.ensure_future(self.registry.update_state(container_id, started_once=True, error=""))
            marked.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved: awaited below
        try:
            await self.containers.start(container_id, again=status.state == ContainerState.EXITED)
        except errors.NarwhalError as exc:
            if marked is not None:
                await asyncio.wait([marked])
            self._network_events(record, "disconnect")
            self._volume_events(record, "unmount")
            await self.registry.update_state(container_id, error=exc.message, started_once=True)
            code = self.containers.get(container_id)[1].exit_code
            self._wake(container_id, {WaitCondition.NOT_RUNNING, WaitCondition.NEXT_EXIT},
                       WaitResult(code, exc.message))
            raise
        if marked is not None:
            await marked
        self.watch(container_id)
        self.health.start(container_id, record.config.healthcheck)

    def watch(self, container_id: str) -> None:
        """Follow the current task's exit (after a start, and for running containers found at recovery)."""
        old = self._watchers.get(container_id)
        if old is not None and not old.done():
            old.cancel()
        event = self.containers.exit_event(container_id)

        async def watcher() -> None:
            await event.wait()
            self._watchers.pop(container_id, None)
            self.health.stop(container_id)
            await self._exited(container_id)

        self._watchers[container_id] = create_guarded_task(watcher, f"engine-exit-{container_id[:12]}")

    # ---------------- stop / kill ----------------
    async def stop(self, ref: str, sig: str | None = None, timeout: int | None = None) -> bool:
        """Stop signal, ``timeout`` s (negative: forever), then SIGKILL; False when not running (304)."""
        container_id = self.registry.resolve(ref)
        record = self.registry.get(container_id)
        self._cancel_restart(container_id)
        if record.state.restarting:
            await self.registry.transition(container_id, None, manually_stopped=True)
        _, status = self.containers.get(container_id)
        if status.state != ContainerState.RUNNING:
            return False
        number = parse_signal(sig or record.config.stop_signal or None, int(signal.SIGTERM))
        if timeout is None:
            timeout = record.config.stop_timeout if record.config.stop_timeout is not None else DEFAULT_STOP_TIMEOUT
        await self.registry.update_state(container_id, manually_stopped=True)

        async def send(number: int) -> None:
            await self._signal(container_id, number)
            await self._resume_quietly(container_id)  # a frozen process gets its signal once thawed

        async def force() -> None:
            await self._resume_quietly(container_id)
            await self.containers.stop(container_id, 0)  # SIGKILL to every process, waits for the exit

        await stop_sequence(container_id, number, timeout, self.containers.exit_event(container_id), self.event,
                            send, force)
        return True

    async def kill(self, ref: str, sig: str | None = None) -> None:
        container_id = self.registry.resolve(ref)
        number = parse_signal(sig)
        _, status = self.containers.get(container_id)
        if status.state != ContainerState.RUNNING:
            raise errors.Conflict(f"Cannot kill container: {ref}: Container {container_id} is not running")
        if number in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
            # moby: a kill the user asked for is a manual stop, the restart policy stands down.
            await self.registry.update_state(container_id, manually_stopped=True)
        self.event("kill", container_id, signal=str(number))
        exited = self.containers.exit_event(container_id)
        await self._signal(container_id, number)
        if number == signal.SIGKILL:
            # moby's Kill (daemon/kill.go): SIGKILL, then wait for the exit, so what follows sees it stopped.
            try:
                await asyncio.wait_for(exited.wait(), KILL_WAIT)
            except TimeoutError:
                log.warning("container %s did not exit within %d s of SIGKILL", container_id[:12], KILL_WAIT)

    async def _signal(self, container_id: str, number: int) -> None:
        await ctr_tasks.kill(self.client, container_id, number)
        if number == signal.SIGKILL:
            await self._resume_quietly(container_id)  # a frozen process dies only once thawed

    async def restart(self, ref: str, sig: str | None = None, timeout: int | None = None) -> None:
        container_id = self.registry.resolve(ref)
        await self.stop(container_id, sig, timeout)
        await self.start(container_id)
        self.event("restart", container_id)

    def _running(self, container_id: str) -> bool:
        return self.containers.get(container_id)[1].state == ContainerState.RUNNING

    # ---------------- pause ----------------
    async def pause(self, ref: str) -> None:
        container_id = self.registry.resolve(ref)
        async with self.registry.lock(container_id):
            record = self.registry.get(container_id)
            if not self._running(container_id):
                raise errors.Conflict(f"Container {container_id} is not running")
            if record.state.paused:
                raise errors.Conflict(f"Container {container_id} is already paused")
            with translate("pause task"):
                await self.client.tasks.Pause(tasks_pb2.PauseTaskRequest(container_id=container_id))
            await self.registry.transition(container_id, DockerState.PAUSED)
        self.event("pause", container_id)

    async def unpause(self, ref: str) -> None:
        container_id = self.registry.resolve(ref)
        async with self.registry.lock(container_id):
            record = self.registry.get(container_id)
            if not record.state.paused or not self._running(container_id):
                raise errors.Conflict(f"Container {container_id} is not paused")
            with translate("resume task"):
                await self.client.tasks.Resume(tasks_pb2.ResumeTaskRequest(container_id=container_id))
            await self.registry.transition(container_id, DockerState.RUNNING)
        self.event("unpause", container_id)

    async def _resume_quietly(self, container_id: str) -> None:
        record = self.registry.find(container_id)
        if record is None or not record.state.paused:
            return
        try:
            with translate("resume task"):
                await self.client.tasks.Resume(tasks_pb2.ResumeTaskRequest(container_id=container_id))
        except errors.NarwhalError as exc:
            log.debug("resume %s: %s", container_id[:12], exc.message)
        await self.registry.transition(container_id, None)

    # ---------------- wait ----------------
    async def wait(self, ref: str, condition: WaitCondition) -> WaitResult:
        container_id = self.registry.resolve(ref)
        record = self.registry.get(container_id)
        _, status = self.containers.get(container_id)
        if condition == WaitCondition.NOT_RUNNING and status.state != ContainerState.RUNNING \
                and not record.state.restarting:
            return WaitResult(status.exit_code)
        future: asyncio.Future[WaitResult] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(container_id, []).append((condition, future))
        try:
            return await future
        finally:
            waiters = self._waiters.get(container_id, [])
            if (condition, future) in waiters:
                waiters.remove((condition, future))

    def _wake(self, container_id: str, conditions: set[WaitCondition], result: WaitResult) -> None:
        keep = []
        for condition, future in self._waiters.get(container_id, []):
            if condition in conditions:
                if not future.done():
                    future.set_result(result)
            else:
                keep.append((condition, future))
        self._waiters[container_id] = keep

    def removed(self, container_id: str, exit_code: int) -> None:
        """The engine removed the container: every waiter is answered."""
        self._cancel_restart(container_id)
        self.health.stop(container_id, forget=True)
        watcher = self._watchers.pop(container_id, None)
        if watcher is not None:
            watcher.cancel()
        self._wake(container_id, set(WaitCondition), WaitResult(exit_code))
        self._waiters.pop(container_id, None)
        self._backoff.pop(container_id, None)

    # ---------------- after an exit ----------------
    async def _exited(self, container_id: str) -> None:
        record = self.registry.find(container_id)
        found = self.containers.ctx.containers.find(container_id)
        if record is None or found is None:
            return
        _, status = found
        if record.state.paused:
            await self.registry.transition(container_id, None)  # the exit ended the pause
        restart = self.should_restart(record, status.exit_code) and not record.state.removing
        if restart:
            try:
                record = await self.registry.transition(container_id, DockerState.RESTARTING)
            except IllegalTransition:  # a removal marked it REMOVING since it was read: it stays down
                restart = False
                record = self.registry.find(container_id) or record
        # Waiters for not-running are answered even when the restart policy brings it back: moby sets
        # Restarting, then fires them (container/state.go), so `docker wait` returns at each exit and what
        # the client does next already sees the container restarting.
        self._wake(container_id, {WaitCondition.NOT_RUNNING, WaitCondition.NEXT_EXIT}, WaitResult(status.exit_code, ""))
        if record.state.removing:
            return
        if restart:
            ran = (status.finished_at - status.started_at) / 1e9 if status.finished_at else 0.0
            delay = self._next_delay(container_id, ran)
            self._restart_timers[container_id] = create_guarded_task(
                lambda: self._restart_after(container_id, delay), f"engine-restart-{container_id[:12]}")
        elif record.host_config.auto_remove:
            await self._remove(container_id)

    def should_restart(self, record: EngineRecord, exit_code: int) -> bool:
        """moby's restartmanager.ShouldRestart (a manual stop or kill suspends every policy)."""
        if record.state.manually_stopped:
            return False
        policy = record.host_config.restart_policy
        if policy.name in (RestartPolicyName.ALWAYS, RestartPolicyName.UNLESS_STOPPED):
            return True
        if policy.name == RestartPolicyName.ON_FAILURE and exit_code != 0:
            return not policy.maximum_retry_count or record.state.restart_count < policy.maximum_retry_count
        return False

    def _next_delay(self, container_id: str, ran_for: float) -> float:
        delay = self._backoff.get(container_id, 0.0)
        delay = BACKOFF_START if ran_for >= BACKOFF_RESET_AFTER or not delay else min(delay * 2, BACKOFF_MAX)
        self._backoff[container_id] = delay
        return delay

    async def _restart_after(self, container_id: str, delay: float) -> None:
        await asyncio.sleep(delay)
        self._restart_timers.pop(container_id, None)
        if self.registry.find(container_id) is None:
            return
        async with self.registry.lock(container_id):
            record = self.registry.find(container_id)
            if record is None or not record.state.restarting:
                return
            if self._running(container_id):
                return
            await self.registry.transition(container_id, None, restart_count=record.state.restart_count + 1)
            try:
                await self._start_task(container_id)
            except errors.NarwhalError as exc:
                log.warning("restart of container %s failed: %s", container_id[:12], exc.message)
                _, status = self.containers.get(container_id)
                self._wake(container_id, {WaitCondition.NOT_RUNNING}, WaitResult(status.exit_code, exc.message))
                return
        log.info("container %s restarted by its restart policy (restart %d)", container_id[:12],
                 record.state.restart_count + 1)

    def _cancel_restart(self, container_id: str) -> None:
        timer = self._restart_timers.pop(container_id, None)
        if timer is not None:
            timer.cancel()

    def restart_soon(self, container_id: str) -> None:
        """Recovery: restart a container its policy wants running again (after a narwhald restart)."""
        self._restart_timers[container_id] = create_guarded_task(
            lambda: self._restart_after(container_id, 0), f"engine-restart-{container_id[:12]}")

