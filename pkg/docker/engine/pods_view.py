"""kubelet's containers seen through the Docker API (``docker-shows-pods``), as dockershim showed them.

A narrow, read-mostly view over the CRI domain's stores: each CRI container
becomes an ``EngineContainer`` (so the Docker JSON code renders it unchanged)
named ``k8s_<container>_<pod>_<namespace>_<uid>_<attempt>`` and labelled with
``io.kubernetes.*``.  Nothing is persisted here and no Docker record exists for
these containers: kubelet owns them.  Mutations are refused (``guard``) except
stop/kill/rm under ``docker-may-stop-pods``, which act on the CRI runtime
itself, so kubelet's ContainerStatus and GetContainerEvents see the outcome
exactly as a container that died (or vanished) by itself.

Pod sandboxes are not shown: Narwhal has no pause container (network, IPC and
UTS namespaces are pinned without a process; a catatonit infra task exists
only for shared-PID pods and is not a container), so there is no ``k8s_POD_``
object to list.
"""
from __future__ import annotations

import asyncio
import signal

from pkg import errors
from pkg.containerd import tasks as ctr_tasks
from pkg.docker.engine.model import (
    ContainerSpec,
    EngineContainer,
    EngineRecord,
    EngineState,
    HostConfig,
    NetworkInfo,
    WaitCondition,
    WaitResult,
)
from pkg.docker.engine.signals import parse_signal, stop_sequence
from pkg.docker.events import docker_events
from pkg.events import ContainerEvent, ContainerEventType, Event
from pkg.model.container import ContainerMetadata, ContainerStatus
from pkg.model.sandbox import SandboxMetadata
from pkg.model.state import ContainerState
from pkg.runtime.containers import ContainerService
from pkg.runtime.sandboxes import SandboxService

POD_NAME = "io.kubernetes.pod.name"
POD_NAMESPACE = "io.kubernetes.pod.namespace"
POD_UID = "io.kubernetes.pod.uid"
CONTAINER_NAME = "io.kubernetes.container.name"

# Verbs dockershim let through on kubelet's containers (docker-may-stop-pods); every other one is refused.
STOPPING_VERBS = frozenset({"stop", "kill", "rm"})
STOP_TIMEOUT = 10  # seconds, Docker's default for `docker stop`


def dockershim_name(container: ContainerMetadata, sandbox: SandboxMetadata | None) -> str:
    """``k8s_<container>_<pod>_<namespace>_<uid>_<attempt>`` (dockershim's naming.go)."""
    pod = sandbox.config if sandbox is not None else None
    return "_".join(("k8s", container.config.name, pod.name if pod else "", pod.namespace if pod else "",
                     pod.uid if pod else "", str(container.config.attempt)))


def kubelet_message(container_id: str, verb: str) -> str:
    return (f"container {container_id[:12]} is managed by kubelet (a Kubernetes pod's container): "
            f"{verb} it through Kubernetes (kubectl) or crictl, not the Docker API")


class PodsView:
    """The CRI runtime's containers, translated for the Docker handlers (lookups, listing, guarded verbs)."""

    def __init__(self, sandboxes: SandboxService, containers: ContainerService, may_stop: bool = False) -> None:
        self.sandboxes = sandboxes
        self.containers = containers  # the CRI domain's: logs, top, stats and exec run on it
        self.may_stop = may_stop
        self._described: dict[str, dict[str, str]] = {}  # ID -> event attributes, for events after removal

    # ---- lookups ----
    def find(self, ref: str) -> str | None:
        """The CRI container ``ref`` names (full ID, unique ID prefix, dockershim name with or without "/")."""
        ref = ref.lstrip("/")
        if not ref:
            return None
        pairs = self.containers.list()
        for metadata, _ in pairs:
            if metadata.id == ref or self._name(metadata) == ref:
                return metadata.id
        matches = [m.id for m, _ in pairs if m.id.startswith(ref)]
        return matches[0] if len(matches) == 1 else None

    def get(self, ref: str) -> EngineContainer:
        container_id = self.find(ref)
        found = self.containers.ctx.containers.find(container_id) if container_id else None
        if found is None:
            raise errors.NotFound(f"No such container: {ref}")
        return self._view(*found)

    def list(self) -> list[EngineContainer]:
        views = [self._view(m, s) for m, s in self.containers.list()]
        return sorted(views, key=lambda c: c.created, reverse=True)

    def sandbox_paths(self, view: EngineContainer) -> tuple[str, str]:
        sandbox = self._sandbox(view.sandbox_id)
        return (sandbox.sandbox_dir, sandbox.netns_path) if sandbox is not None else ("", "")

    def _sandbox(self, sandbox_id: str) -> SandboxMetadata | None:
        found = self.sandboxes.ctx.sandboxes.find(sandbox_id)
        return found[0] if found is not None else None

    def _name(self, metadata: ContainerMetadata) -> str:
        return dockershim_name(metadata, self._sandbox(metadata.sandbox_id))

    def _view(self, metadata: ContainerMetadata, status: ContainerStatus) -> EngineContainer:
        sandbox = self._sandbox(metadata.sandbox_id)
        config = metadata.config
        labels = dict(config.labels)
        if sandbox is not None:
            labels.update({POD_NAME: sandbox.config.name, POD_NAMESPACE: sandbox.config.namespace,
                           POD_UID: sandbox.config.uid})
        labels[CONTAINER_NAME] = config.name
        spec = ContainerSpec(
            image=metadata.image_ref or config.image, entrypoint=tuple(config.command), cmd=tuple(config.args),
            env=tuple(f"{k}={v}" for k, v in config.envs), labels=labels, working_dir=config.working_dir,
            hostname=sandbox.config.hostname if sandbox is not None else "", tty=config.tty,
            open_stdin=config.stdin, stdin_once=config.stdin_once, stop_signal=metadata.stop_signal)
        host_network = sandbox is not None and not sandbox.netns_path
        host = HostConfig(network_mode="host" if host_network else "none")
        record = EngineRecord(
            id=metadata.id, name=dockershim_name(metadata, sandbox), sandbox_id=metadata.sandbox_id,
            owns_sandbox=False, image_id=metadata.image_id, created=metadata.created_at, config=spec,
            host_config=host, log_path=metadata.log_path,
            state=EngineState(started_once=status.started_at > 0, restart_count=config.attempt))
        networks: tuple[NetworkInfo, ...] = ()
        if sandbox is not None and not host_network and status.state == ContainerState.RUNNING:
            found = self.sandboxes.ctx.sandboxes.find(sandbox.id)
            ip = found[1].ip if found is not None else ""
            networks = (NetworkInfo(name="pod", ip=ip),) if ip else ()
        return EngineContainer(record, status, networks)

    def describe(self, container_id: str) -> dict[str, str] | None:
        """Docker event attributes of a pod's container (labels, image, dockershim name), remembered for its
        ``destroy`` event, which comes after the store forgot it."""
        found = self.containers.ctx.containers.find(container_id)
        if found is None:
            return self._described.pop(container_id, None)
        view = self._view(*found)
        attributes = {**view.config.labels, "image": view.config.image, "name": view.name}
        self._described[container_id] = attributes
        return attributes

    async def wait(self, container_id: str, condition: WaitCondition) -> WaitResult:
        """``docker wait``: a kubelet container never runs again once exited (kubelet makes a new attempt), so
        not-running and next-exit both end at its exit; removed ends when kubelet (or an allowed ``docker rm``)
        removes it, with the exit code it had (what ``docker run --rm`` and docker-py's
        ``wait(condition="removed")`` expect)."""
        if condition == WaitCondition.REMOVED:
            return await self._wait_removed(container_id)
        _, status = self.containers.get(container_id)
        if status.state == ContainerState.RUNNING:
            await self.containers.exit_event(container_id).wait()
            found = self.containers.ctx.containers.find(container_id)
            if found is None:
                return WaitResult(-1, "the container was removed")
            status = found[1]
        return WaitResult(status.exit_code)

    async def _wait_removed(self, container_id: str) -> WaitResult:
        def removed(event: Event) -> bool:
            return (isinstance(event, ContainerEvent) and event.container_id == container_id
                    and event.type == ContainerEventType.DELETED)

        # Subscribed before the store is read: a removal between the two cannot be missed.
        async with self.containers.ctx.events.bus.subscribe(removed) as sub:
            found = self.containers.ctx.containers.find(container_id)
            if found is None:
                raise errors.NotFound(f"No such container: {container_id}")
            code = found[1].exit_code
            gone = asyncio.ensure_future(sub.get())
            try:
                if found[1].state == ContainerState.RUNNING:  # its exit code is known once it has exited
                    exited = asyncio.ensure_future(self.containers.exit_event(container_id).wait())
                    try:
                        await asyncio.wait({gone, exited}, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        exited.cancel()
                    after = self.containers.ctx.containers.find(container_id)
                    code = after[1].exit_code if after is not None else code
                await gone
            finally:
                gone.cancel()
        return WaitResult(code)

    # ---- guarded verbs ----
    def guard(self, container_id: str, verb: str) -> None:
        """Refuse ``verb`` on kubelet's container (409), unless docker-may-stop-pods allows it."""
        if verb in STOPPING_VERBS and self.may_stop:
            return
        raise errors.Conflict(kubelet_message(container_id, verb))

    async def stop(self, container_id: str, timeout: int | None) -> bool:
        """moby's containerStop on the CRI task: the stop signal, the wait, then SIGKILL (a ``kill`` event each),
        ``stop`` once over; the exit itself goes through the runtime's exit path, so kubelet sees an exited
        container (and the Docker face its ``die``) as for any other death."""
        self.guard(container_id, "stop")
        metadata, status = self.containers.get(container_id)
        if status.state != ContainerState.RUNNING:
            return False
        timeout = STOP_TIMEOUT if timeout is None else timeout
        number = parse_signal(metadata.stop_signal or None, int(signal.SIGTERM))

        async def send(number: int) -> None:
            await ctr_tasks.kill(self.containers.ctx.client, container_id, number)

        async def force() -> None:
            await self.containers.stop(container_id, 0)  # SIGKILL to every process, waits for the exit

        await stop_sequence(container_id, number, timeout, self.containers.exit_event(container_id), self._event,
                            send, force)
        return True

    async def kill(self, container_id: str, sig: str | None) -> None:
        """Signal the task (a ``kill`` event, as moby logs one per signal); its exit (if any) goes through the
        runtime's exit path like any other death."""
        self.guard(container_id, "kill")
        number = parse_signal(sig)
        _, status = self.containers.get(container_id)
        if status.state != ContainerState.RUNNING:
            raise errors.Conflict(f"Cannot kill container: {container_id}: Container {container_id} is not running")
        self._event("kill", container_id, signal=str(number))
        if number == signal.SIGKILL:
            await self.containers.stop(container_id, 0)  # SIGKILL and wait for the exit, as moby's Kill
            return
        await ctr_tasks.kill(self.containers.ctx.client, container_id, number)

    def _event(self, action: str, container_id: str, **extra: str) -> None:
        """A Docker-only action on kubelet's container (kill, stop): the CRI domain publishes it to Docker's
        readers only (docker-shows-pods), kubelet's GetContainerEvents never sees it."""
        found = self.containers.ctx.containers.find(container_id)
        if found is not None:
            docker_events(self.containers.ctx.events).container(action, found[0], **extra)

    async def remove(self, container_id: str, force: bool) -> None:
        """dockershim's ``docker rm``: a running one only with force; kubelet then finds it gone."""
        self.guard(container_id, "rm")
        _, status = self.containers.get(container_id)
        if status.state == ContainerState.RUNNING and not force:
            raise errors.Conflict(f"You cannot remove a running container {container_id}. "
                                  "Stop the container before attempting removal or force remove")
        await self.containers.remove(container_id)
