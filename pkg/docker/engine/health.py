"""Docker health checks: while a container with a HEALTHCHECK runs, its test command is executed in it
every interval; the last results decide starting / healthy / unhealthy (moby's daemon/health.go).

The state is kept in memory and, after every probe, in the container's record: a restart of narwhald
resumes a running container's check where it was (and inspect of a stopped one shows its last state), while
a restart of the container starts over at "starting", as Docker does.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable

from pkg import errors
from pkg.aio import create_guarded_task
from pkg.docker.engine.model import Health, HealthConfig, HealthStatus, ProbeResult
from pkg.runtime.containers import ContainerService

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 30.0
DEFAULT_TIMEOUT = 30.0
DEFAULT_RETRIES = 3
KEEP_RESULTS = 5  # moby keeps the last 5 probe results
MAX_OUTPUT = 4096  # bytes of probe output kept per result


def command(config: HealthConfig) -> list[str] | None:
    """The probe's argv; None when the check is disabled ("NONE") or empty."""
    test = list(config.test)
    if not test or test[0] == "NONE":
        return None
    if test[0] == "CMD":
        return test[1:] or None
    if test[0] == "CMD-SHELL":
        return ["/bin/sh", "-c", " ".join(test[1:])] if len(test) > 1 else None
    raise errors.InvalidArgument(f"unknown health check type {test[0]!r} (CMD, CMD-SHELL or NONE)")


def next_health(old: Health, result: ProbeResult, retries: int, in_start_period: bool) -> Health:
    """One probe's effect: a success is healthy at once; failures count only after the start period,
    and ``retries`` of them in a row make the container unhealthy."""
    entries = (*old.log, result)[-KEEP_RESULTS:]
    if result.exit_code == 0:
        return Health(HealthStatus.HEALTHY, 0, entries)
    if in_start_period and old.status == HealthStatus.STARTING:
        return dataclasses.replace(old, log=entries)
    streak = old.failing_streak + 1
    status = HealthStatus.UNHEALTHY if streak >= retries else old.status
    return Health(status, streak, entries)


class HealthMonitor:
    def __init__(self, containers: ContainerService, on_change: Callable[[str, HealthStatus], None],
                 persist: Callable[[str, Health], Awaitable[None]] | None = None) -> None:
        self.containers = containers
        self._on_change = on_change
        self._persist = persist
        self._health: dict[str, Health] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def get(self, container_id: str) -> Health | None:
        return self._health.get(container_id)

    def start(self, container_id: str, config: HealthConfig | None, resume: Health | None = None) -> None:
        """Begin probing a container that just started (again); ``resume``: the state it had when narwhald
        stopped, for a container that kept running meanwhile."""
        self.stop(container_id)
        argv = command(config) if config is not None else None
        if config is None or argv is None:
            return
        self._health[container_id] = resume or Health()
        self._tasks[container_id] = create_guarded_task(lambda: self._probe_loop(container_id, config, argv),
                                                        f"health-{container_id[:12]}")

    def stop(self, container_id: str, forget: bool = False) -> None:
        """The container exited (keep the last state for inspect) or was removed (``forget``)."""
        task = self._tasks.pop(container_id, None)
        if task is not None:
            task.cancel()
        if forget:
            self._health.pop(container_id, None)

    def close(self) -> list[asyncio.Task[None]]:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        return tasks

    async def _probe_loop(self, container_id: str, config: HealthConfig, argv: list[str]) -> None:
        interval = config.interval_ns / 1e9 or DEFAULT_INTERVAL
        timeout = config.timeout_ns / 1e9 or DEFAULT_TIMEOUT
        retries = config.retries or DEFAULT_RETRIES
        started = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            begin = time.time_ns()
            try:
                result = await self.containers.exec_sync(container_id, argv, timeout)
                code, output = result.exit_code, (result.stdout + result.stderr)[:MAX_OUTPUT].decode(errors="replace")
            except errors.DeadlineExceeded:
                code, output = -1, f"Health check exceeded timeout ({timeout:g}s)"
            except errors.FailedPrecondition:
                return  # no longer running
            except errors.NarwhalError as exc:
                code, output = -1, exc.message
            probe = ProbeResult(begin, time.time_ns(), code, output)
            old = self._health.get(container_id, Health())
            in_start = time.monotonic() - started < config.start_period_ns / 1e9
            new = next_health(old, probe, retries, in_start)
            self._health[container_id] = new
            if self._persist is not None:
                try:
                    await self._persist(container_id, new)
                except errors.NarwhalError as exc:  # removed meanwhile: nothing to keep
                    log.debug("health of %s not recorded: %s", container_id[:12], exc.message)
            if new.status != old.status:
                log.info("container %s is %s", container_id[:12], new.status.value)
                self._on_change(container_id, new.status)
