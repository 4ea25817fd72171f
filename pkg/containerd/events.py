"""containerd's event stream, decoded into typed task events for the exit/OOM monitor."""
from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass

from pkg.containerd.api.events import task_pb2 as ev
from pkg.containerd.api.services.events.v1 import events_pb2 as pb
from pkg.containerd.client import Client
from pkg.containerd.errors import translate


@dataclass(frozen=True)
class TaskExit:
    container_id: str
    exec_id: str  # the process ID; equals container_id for the init process
    pid: int
    exit_status: int
    exited_at_ns: int


@dataclass(frozen=True)
class TaskOOM:
    container_id: str


TaskEvent = TaskExit | TaskOOM


async def subscribe(client: Client) -> AsyncGenerator[TaskEvent, None]:
    """Task exit and OOM events of our namespace, as they happen (until the stream breaks)."""
    filters = [
        f'namespace=={client.namespace},topic=="/tasks/exit"',
        f'namespace=={client.namespace},topic=="/tasks/oom"',
    ]
    with translate("subscribe to containerd events"):
        async for envelope in client.events.Subscribe(pb.SubscribeRequest(filters=filters)):
            if envelope.topic == "/tasks/exit":
                exit_ = ev.TaskExit()
                exit_.ParseFromString(envelope.event.value)
                exited = exit_.exited_at.seconds * 1_000_000_000 + exit_.exited_at.nanos
                yield TaskExit(exit_.container_id, exit_.id, exit_.pid, exit_.exit_status, exited)
            elif envelope.topic == "/tasks/oom":
                oom = ev.TaskOOM()
                oom.ParseFromString(envelope.event.value)
                yield TaskOOM(oom.container_id)
