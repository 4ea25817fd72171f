"""The node agent: runs the tasks assigned to this node and reports their status (swarmkit's agent).

Managers and workers alike run one.  It reads only its own tasks from the store (a worker will be
an etcd client only), drives each one new -> accepted -> preparing -> ready -> starting ->
running through the executor, reports exits (complete/failed), stops tasks whose desired state
became shutdown, removes the containers of tasks marked remove or gone from the store.  It wakes
on store changes and every second (container exits are seen by observation).
"""
from __future__ import annotations

import asyncio
import logging
import os
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pkg import errors
from pkg import mount as mountlib
from pkg.aio import create_guarded_task
from pkg.docker.swarm import allocation, keys, networks, objects
from pkg.docker.swarm.executor import Executor
from pkg.docker.swarm.store import Store
from pkg.docker.volumes.model import MountSpec, MountType

log = logging.getLogger(__name__)

Obj = dict[str, Any]

POLL = 1.0


async def update_with_retry(store: Store, kind: str, obj_id: str, change: Callable[[Obj], bool]) -> Obj | None:
    """Read-modify-write with the version check, retried when another writer got there first.

    ``change`` edits the object in place and says whether to write; None when the object is gone.
    """
    for _ in range(20):
        obj = await store.get(kind, obj_id)
        if obj is None:
            return None
        if not change(obj):
            return obj
        obj["UpdatedAt"] = objects.now()
        try:
            return await store.update(kind, obj)
        except errors.Internal:
            continue  # out of sequence: read again
        except errors.NotFound:
            return None
    raise errors.Internal(f"{kind[:-1]} {obj_id}: too many concurrent updates")


class Agent:
    def __init__(self, store: Store, node_id: str, executor: Executor, state_dir: Path,
                 dek: Callable[[], bytes | None] = lambda: None) -> None:
        self.store = store
        self._dek = dek  # opens sealed secret data (keys.py)
        self.node_id = node_id
        self.executor = executor
        self.files = state_dir / "files"  # secrets and configs of running tasks, on a tmpfs (unmount_files)
        self._jobs: dict[str, asyncio.Task[None]] = {}
        # tasks whose start/stop job ended during the current pass: what the pass read of them is stale
        self._ended: set[str] = set()
        self._wake = asyncio.Event()
        self._stopping = False

    # ---- files (secrets, configs) ----
    def _mount_files(self) -> None:
        self.files.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not mountlib.is_mounted(self.files):
            mountlib.mount("tmpfs", self.files, "tmpfs", 0, "mode=0700")


    async def _task_files(self, task: Obj) -> list[MountSpec]:
        """Write the task's secrets and configs to its tmpfs dir; their read-only binds."""
        cs = task["Spec"].get("ContainerSpec") or {}
        base = self.files / task["ID"]
        mounts: list[MountSpec] = []
        for kind, refs, id_key, default_dir in (("secrets", cs.get("Secrets") or [], "SecretID", "/run/secrets"),
                                                ("configs", cs.get("Configs") or [], "ConfigID", "/")):
            for ref in refs:
                obj = await self.store.get(kind, ref[id_key])
                if obj is None:
                    raise errors.NotFound(f"{kind[:-1]} {ref[id_key]} not found")
                file = ref.get("File") or {}
                target = file.get("Name") or obj["Spec"]["Name"]
                if not target.startswith("/"):
                    target = os.path.join(default_dir, target)
                data = keys.open_data(self._dek(), obj["Spec"].get("Data") or "")
                path = base / kind / ref[id_key]
                await asyncio.to_thread(_write_file, path, data, int(file.get("Mode", 0o444)),
                                        int(file.get("UID") or 0), int(file.get("GID") or 0))
                mounts.append(MountSpec(type=MountType.BIND, source=str(path), target=target, read_only=True))
        return mounts

    # ---- loop ----
    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Reconcile until ``stop``: a pass is never cancelled half-way (a container create or remove
        cut short would leave its sandbox behind)."""
        await asyncio.to_thread(self._mount_files)
        while not self._stopping:
            try:
                await self.reconcile()
            except Exception as exc:  # noqa: BLE001 - etcd or engine trouble: log, try again next pass
                log.warning("agent: %s", exc)
            self._wake.clear()
            if self._stopping:
                break
            try:
                await asyncio.wait_for(self._wake.wait(), POLL)
            except TimeoutError:
                pass

    async def stop(self, runner: asyncio.Task[None] | None, timeout: float = 60.0) -> None:
        """Let the current pass and the task starts in flight finish, then stop (cancel after ``timeout``)."""
        self._stopping = True
        self.wake()
        pending = [t for t in (runner, *self._jobs.values()) if t is not None]
        if pending:
            _, late = await asyncio.wait(pending, timeout=timeout)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=5)
        self._jobs.clear()

    async def reconcile(self) -> None:
        """One pass over this node's tasks.  A task whose job ended after the pass read the store is left to
        the next pass: its state and container as read are stale, and acting on them started a finished
        task a second time (its container name taken -> ``rejected``, a failure to the update supervisor:
        the "rollback paused due to failure" of a loaded machine)."""
        self._ended.clear()
        tasks = [t for t in await self.store.list("tasks") if t.get("NodeID") == self.node_id]
        containers = self.executor.containers()
        known = {t["ID"] for t in tasks}
        for task in tasks:
            if task["ID"] in self._jobs or task["ID"] in self._ended:
                continue
            await self._reconcile_task(task, containers.get(task["ID"]))
        for task_id, container_id in containers.items():
            if task_id not in known and task_id not in self._jobs and task_id not in self._ended:
                log.info("agent: removing container %s of gone task %s", container_id[:12], task_id)
                await self.executor.remove(container_id)
                await asyncio.to_thread(shutil.rmtree, self.files / task_id, True)

    async def _reconcile_task(self, task: Obj, container_id: str | None) -> None:
        desired, state = task["DesiredState"], task["Status"]["State"]
        if desired == "remove":
            if container_id is not None:
                await self.executor.remove(container_id)
            await asyncio.to_thread(shutil.rmtree, self.files / task["ID"], True)
            await self.store.delete("tasks", task["ID"])
            return
        if objects.state_index(desired) > objects.state_index("running"):
            observed = self.executor.observe(container_id) if container_id is not None else None
            if observed is not None and observed.running:
                running_id = observed.container_id
                self._spawn(task["ID"], lambda: self._stop_task(task, running_id))
            elif state not in objects.TERMINAL:
                await self._report(task["ID"], "shutdown", "shutdown")
            return
        if state in objects.TERMINAL:
            return
        if objects.state_index(state) < objects.state_index("running") and container_id is None:
            self._start_job(task)
            return
        observed = self.executor.observe(container_id) if container_id else None
        if observed is None:
            await self._report(task["ID"], "failed", "started", err="task: container is gone")
        elif observed.exited:
            if observed.exit_code == 0:
                await self._report(task["ID"], "complete", "finished", exit_code=0)
            else:
                await self._report(task["ID"], "failed", "started", exit_code=observed.exit_code,
                                   err=f"task: non-zero exit ({observed.exit_code})")
        elif observed.running and state != "running":
            await self._report(task["ID"], "running", "started", container_id=observed.container_id,
                               pid=observed.pid, attachments=await self._attachments(task, observed.container_id))

    def _start_job(self, task: Obj) -> None:
        self._spawn(task["ID"], lambda: self._run_task(task))

    def _spawn(self, task_id: str, work: Callable[[], Awaitable[None]]) -> None:
        """Start or stop one task in the background (a stop waits out the grace period): the pass goes on."""

        async def job() -> None:
            try:
                await work()
            finally:
                self._jobs.pop(task_id, None)
                self._ended.add(task_id)
                self.wake()

        self._jobs[task_id] = create_guarded_task(job, f"swarm-task-{task_id}")

    async def _stop_task(self, task: Obj, container_id: str) -> None:
        grace = int((task["Spec"].get("ContainerSpec") or {}).get("StopGracePeriod", 10_000_000_000))
        await self.executor.stop(container_id, grace)
        await self._report(task["ID"], "shutdown", "shutdown")

    async def _run_task(self, task: Obj) -> None:
        service = await self.store.get("services", task["ServiceID"])
        if service is None or self._stopping:
            return
        image = (task["Spec"].get("ContainerSpec") or {}).get("Image", "")
        await self._report(task["ID"], "accepted", "accepted")
        await self._report(task["ID"], "preparing", "preparing")
        try:
            await self.executor.prepare(image)
        except errors.NarwhalError as exc:
            await self._report(task["ID"], "rejected", "preparing", err=str(exc))
            return
        try:
            mounts = await self._task_files(task)
            await self._report(task["ID"], "ready", "prepared")
            ingress = ""
            if networks.ingress_needed(service["Spec"]):  # swarmkit attaches the task to ingress, first
                record = allocation.ingress_network(await networks.all_networks(self.store))
                ingress = record["ID"] if record is not None else ""
            container_id = await self.executor.create(objects.task_name(service["Spec"]["Name"], task), task,
                                                      service, self.node_id, mounts, ingress)
        except errors.NarwhalError as exc:
            await self._report(task["ID"], "rejected", "preparing", err=str(exc))
            return
        await self._report(task["ID"], "starting", "starting", container_id=container_id)
        try:
            await self.executor.start(container_id)
        except errors.NarwhalError as exc:
            await self._report(task["ID"], "failed", "starting", err=str(exc), container_id=container_id)
            return
        observed = self.executor.observe(container_id)
        if observed is not None and observed.running:
            await self._report(task["ID"], "running", "started", container_id=container_id, pid=observed.pid,
                               attachments=await self._attachments(task, container_id))

    async def _attachments(self, task: Obj, container_id: str) -> list[Obj] | None:
        """The task's NetworksAttachments from its container's addresses (written with the running state, so a
        node that sees the task running also sees where the routing mesh reaches it); None: leave them."""
        addresses = await self.executor.addresses(container_id)
        records = await networks.all_networks(self.store)
        return allocation.task_attachments(task, records, addresses) or None

    async def _report(self, task_id: str, state: str, message: str, *, err: str = "", exit_code: int | None = None,
                      container_id: str = "", pid: int = 0, attachments: list[Obj] | None = None) -> None:
        def change(task: Obj) -> bool:
            current = task["Status"]["State"]
            if current in objects.TERMINAL or objects.state_index(state) < objects.state_index(current):
                return False  # status only moves forward
            status: Obj = {"Timestamp": objects.now(), "State": state, "Message": message}
            if err:
                status["Err"] = err
            cstatus = dict(task["Status"].get("ContainerStatus") or {})
            if container_id:
                cstatus["ContainerID"] = container_id
            if pid:
                cstatus["PID"] = pid
            if exit_code is not None:
                cstatus["ExitCode"] = exit_code
            if cstatus:
                status["ContainerStatus"] = cstatus
            status["PortStatus"] = {}
            task["Status"] = status
            if attachments is not None:
                task["NetworksAttachments"] = attachments
            return True

        await update_with_retry(self.store, "tasks", task_id, change)


def unmount_files(state_dir: Path) -> None:
    """Leaving the swarm: the tmpfs of secrets and configs goes."""
    files = state_dir / "files"
    if files.exists():
        mountlib.umount(files)
        shutil.rmtree(files, ignore_errors=True)


def _write_file(path: Path, data: bytes, mode: int, uid: int, gid: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.chown(tmp, uid, gid)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
