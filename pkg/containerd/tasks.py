"""containerd tasks (the running process of a container): thin typed wrappers."""
from __future__ import annotations

import enum
import json
import signal as signals
from dataclasses import dataclass
from typing import TypeVar

from google.protobuf import any_pb2, empty_pb2
from google.protobuf.message import Message

from pkg import errors
from pkg.containerd.api.runtime.v2.task import shim_pb2
from pkg.containerd.api.services.tasks.v1 import tasks_pb2 as pb
from pkg.containerd.api.types import mount_pb2
from pkg.containerd.api.types.task import task_pb2
from pkg.containerd.client import Client
from pkg.containerd.errors import translate
from pkg.containerd.shims import Unreachable
from pkg.containerd.snapshots import Mount

R = TypeVar("R", bound=Message)


class TaskStatus(enum.Enum):
    UNKNOWN = 0
    CREATED = 1
    RUNNING = 2
    STOPPED = 3
    PAUSED = 4
    PAUSING = 5


@dataclass(frozen=True)
class TaskInfo:
    id: str
    pid: int
    status: TaskStatus
    exit_status: int
    exited_at_ns: int


def _info(p: task_pb2.Process) -> TaskInfo:
    exited = p.exited_at.seconds * 1_000_000_000 + p.exited_at.nanos if p.HasField("exited_at") else 0
    return TaskInfo(p.id or p.container_id, p.pid, TaskStatus(p.status), p.exit_status, exited)


# With ``client.shims``, the calls containerd's task service only passes on to the task's shim (a task's Start,
# an exec process's) go straight to it (pkg.containerd.shims); when the shim cannot be reached, through
# containerd as before.
async def _shim(client: Client, container_id: str, method: str, request: Message, response: type[R], *,
                what: str, timeout: float | None = None) -> R | None:
    """The shim's answer, or None when the call is to go through containerd."""
    if client.shims is None:
        return None
    try:
        return await client.shims.call(container_id, method, request, response, what=what, timeout=timeout)
    except Unreachable:
        return None


async def create(
    client: Client,
    container_id: str,
    rootfs: list[Mount],
    *,
    stdin: str = "",
    stdout: str = "",
    stderr: str = "",
    terminal: bool = False,
) -> int:
    request = pb.CreateTaskRequest(
        container_id=container_id,
        rootfs=[mount_pb2.Mount(type=m.type, source=m.source, options=m.options) for m in rootfs],
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        terminal=terminal,
    )
    for attempt in range(SHIM_START_ATTEMPTS):
        try:
            with translate(f"create task {container_id}"):
                resp = await client.tasks.Create(request, timeout=60)
            return int(resp.pid)
        except errors.Internal as exc:
            if attempt + 1 == SHIM_START_ATTEMPTS or not _shim_went_away(exc.message):
                raise
    raise AssertionError("unreachable")


# A grouped runc v2 shim (a pod's containers share one: io.kubernetes.cri.sandbox-id) exits when its last task
# is deleted. Narwhal runs no pause container to keep it alive, so a container created while the pod's only other
# container is being deleted can be handed the address of the shim that is just exiting: containerd then fails
# with "failed to start shim: start failed: dial unix …: connect: no such file or directory" (or "connection
# refused"), or the exiting shim takes the Create and hangs up ("failed to create shim task: ttrpc: closed").
# containerd cleans up the failed task either way, and a second try starts a fresh shim for the group.
SHIM_START_ATTEMPTS = 3


def _shim_went_away(message: str) -> bool:
    if "failed to create shim task: ttrpc: closed" in message:  # the exiting shim took the Create, then hung up
        return True
    return "failed to start shim" in message and "dial unix" in message and (
        "no such file or directory" in message or "connection refused" in message)


async def start(client: Client, container_id: str, exec_id: str = "") -> int:
    """Start a created task (its init process): its pid."""
    return await _start(client, container_id, exec_id, what=f"start task {container_id}", timeout=60)


async def _start(client: Client, container_id: str, exec_id: str, *, what: str, timeout: float | None) -> int:
    """A task's or an exec process's Start: straight to the shim where it can be reached (containerd's Start
    passes it on, then asks the shim for the pid, which the shim's answer carries already)."""
    direct = await _shim(client, container_id, "Start", shim_pb2.StartRequest(id=container_id, exec_id=exec_id),
                         shim_pb2.StartResponse, what=what, timeout=timeout)
    if direct is not None:
        return int(direct.pid)
    with translate(what):
        resp = await client.tasks.Start(pb.StartRequest(container_id=container_id, exec_id=exec_id), timeout=timeout)
    return int(resp.pid)


async def get(client: Client, container_id: str) -> TaskInfo | None:
    try:
        with translate(f"task {container_id}"):
            resp = await client.tasks.Get(pb.GetRequest(container_id=container_id), timeout=30)
    except errors.NotFound:
        return None
    return _info(resp.process)


async def list_all(client: Client) -> dict[str, TaskInfo]:
    with translate("list tasks"):
        resp = await client.tasks.List(pb.ListTasksRequest(), timeout=60)
    return {t.id: _info(t) for t in resp.tasks}


async def kill(client: Client, container_id: str, sig: int = signals.SIGKILL, all_: bool = False) -> None:
    """Signal the task; a task that is gone or already stopped is not an error.

    A task exiting while it is signalled can make the shim hang up mid-call ("ttrpc: closed"); that
    too is success once containerd shows the task stopped or gone."""
    try:
        with translate(f"kill task {container_id}"):
            await client.tasks.Kill(pb.KillRequest(container_id=container_id, signal=sig, all=all_), timeout=30)
    except (errors.NotFound, errors.FailedPrecondition):
        pass
    except errors.Internal:
        task = await get(client, container_id)
        if task is not None and task.status != TaskStatus.STOPPED:
            raise


async def wait(client: Client, container_id: str, timeout: float | None = None) -> tuple[int, int]:
    """Block until the task exits: (exit status, exited_at ns)."""
    with translate(f"wait task {container_id}"):
        resp = await client.tasks.Wait(pb.WaitRequest(container_id=container_id), timeout=timeout)
    return int(resp.exit_status), resp.exited_at.seconds * 1_000_000_000 + resp.exited_at.nanos


async def delete(client: Client, container_id: str) -> None:
    """Delete a stopped task; idempotent."""
    try:
        with translate(f"delete task {container_id}"):
            await client.tasks.Delete(pb.DeleteTaskRequest(container_id=container_id), timeout=60)
    except errors.NotFound:
        pass


async def update_resources(client: Client, container_id: str, resources: dict[str, object]) -> None:
    value = any_pb2.Any(
        type_url="types.containerd.io/opencontainers/runtime-spec/1/LinuxResources",
        value=json.dumps(resources).encode(),
    )
    with translate(f"update task {container_id}"):
        await client.tasks.Update(pb.UpdateTaskRequest(container_id=container_id, resources=value), timeout=30)


async def pids(client: Client, container_id: str) -> list[int]:
    with translate(f"list pids of {container_id}"):
        resp = await client.tasks.ListPids(pb.ListPidsRequest(container_id=container_id), timeout=30)
    return [p.pid for p in resp.processes]


async def resize_pty(client: Client, container_id: str, width: int, height: int, exec_id: str = "") -> None:
    with translate(f"resize pty of {container_id}"):
        await client.tasks.ResizePty(
            pb.ResizePtyRequest(container_id=container_id, exec_id=exec_id, width=width, height=height), timeout=10
        )


async def close_stdin(client: Client, container_id: str, exec_id: str = "") -> None:
    """Close the process's stdin in the shim (the shim holds its own writer on the stdin fifo)."""
    with translate(f"close stdin of {container_id}"):
        await client.tasks.CloseIO(pb.CloseIORequest(container_id=container_id, exec_id=exec_id, stdin=True),
                                   timeout=10)


# ---- exec processes (a second process in a running task), as pkg.runtime.exec drives them ----
# ``what`` is the caller's wording for errors; no timeout where the caller waits on the process itself.
# With ``client.shims`` each goes straight to the task's shim (``_shim``).
PROCESS_SPEC_TYPE = "types.containerd.io/opencontainers/runtime-spec/1/Process"


async def exec_process(client: Client, container_id: str, exec_id: str, spec: dict[str, object], *,
                       terminal: bool, stdin: str, stdout: str, stderr: str, what: str) -> None:
    """Create an exec process (OCI process ``spec``; stdio fifo paths, "" = none); Start runs it."""
    spec_any = any_pb2.Any(type_url=PROCESS_SPEC_TYPE, value=json.dumps(spec).encode())
    direct = shim_pb2.ExecProcessRequest(id=container_id, exec_id=exec_id, terminal=terminal, stdin=stdin,
                                         stdout=stdout, stderr=stderr, spec=spec_any)
    if await _shim(client, container_id, "Exec", direct, empty_pb2.Empty, what=what) is not None:
        return
    request = pb.ExecProcessRequest(container_id=container_id, exec_id=exec_id, terminal=terminal, stdin=stdin,
                                    stdout=stdout, stderr=stderr, spec=spec_any)
    with translate(what):
        await client.tasks.Exec(request)


async def start_process(client: Client, container_id: str, exec_id: str, *, what: str) -> int:
    """Start a created exec process: its pid."""
    return await _start(client, container_id, exec_id, what=what, timeout=None)


async def wait_process(client: Client, container_id: str, exec_id: str, *, what: str,
                       timeout: float | None = None) -> int:
    """Block until the exec process exits: its exit status."""
    direct = await _shim(client, container_id, "Wait", shim_pb2.WaitRequest(id=container_id, exec_id=exec_id),
                         shim_pb2.WaitResponse, what=what, timeout=timeout)
    if direct is not None:
        return int(direct.exit_status)
    with translate(what):
        resp = await client.tasks.Wait(pb.WaitRequest(container_id=container_id, exec_id=exec_id), timeout=timeout)
    return int(resp.exit_status)


async def kill_process(client: Client, container_id: str, exec_id: str, sig: int, *, what: str) -> None:
    request = shim_pb2.KillRequest(id=container_id, exec_id=exec_id, signal=sig)
    if await _shim(client, container_id, "Kill", request, empty_pb2.Empty, what=what) is not None:
        return
    with translate(what):
        await client.tasks.Kill(pb.KillRequest(container_id=container_id, exec_id=exec_id, signal=sig))


async def delete_process(client: Client, container_id: str, exec_id: str, *, what: str) -> None:
    request = shim_pb2.DeleteRequest(id=container_id, exec_id=exec_id)
    if await _shim(client, container_id, "Delete", request, shim_pb2.DeleteResponse, what=what) is not None:
        return
    with translate(what):
        await client.tasks.DeleteProcess(pb.DeleteProcessRequest(container_id=container_id, exec_id=exec_id))


async def close_process_stdin(client: Client, container_id: str, exec_id: str, *, what: str) -> None:
    request = shim_pb2.CloseIORequest(id=container_id, exec_id=exec_id, stdin=True)
    if await _shim(client, container_id, "CloseIO", request, empty_pb2.Empty, what=what) is not None:
        return
    with translate(what):
        await client.tasks.CloseIO(pb.CloseIORequest(container_id=container_id, exec_id=exec_id, stdin=True))


async def resize_process_pty(client: Client, container_id: str, exec_id: str, width: int, height: int, *,
                             what: str) -> None:
    request = shim_pb2.ResizePtyRequest(id=container_id, exec_id=exec_id, width=width, height=height)
    if await _shim(client, container_id, "ResizePty", request, empty_pb2.Empty, what=what) is not None:
        return
    with translate(what):
        await client.tasks.ResizePty(pb.ResizePtyRequest(container_id=container_id, exec_id=exec_id, width=width,
                                                         height=height))


async def pause(client: Client, container_id: str, *, what: str) -> None:
    with translate(what):
        await client.tasks.Pause(pb.PauseTaskRequest(container_id=container_id))


async def resume(client: Client, container_id: str, *, what: str) -> None:
    with translate(what):
        await client.tasks.Resume(pb.ResumeTaskRequest(container_id=container_id))
