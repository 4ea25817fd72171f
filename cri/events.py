"""GetContainerEvents: a server stream of container lifecycle events (kubelet's Evented PLEG).

Only the CRI domain's containers are reported (the bus also carries Docker's).
A stream that falls behind the bus is ended with RESOURCE_EXHAUSTED; kubelet
then reconnects and relists, which is what it does after any stream error.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from cri_api.v1 import api_pb2

from cri import convert
from pkg.events import CRI_DOMAIN, ContainerEvent, Event, EventBus
from pkg.runtime.containers import ContainerService
from pkg.runtime.sandboxes import SandboxService


def _cri_container_event(event: Event) -> bool:
    return isinstance(event, ContainerEvent) and event.domain == CRI_DOMAIN


class EventHandlers:
    def __init__(self, bus: EventBus, sandboxes: SandboxService, containers: ContainerService) -> None:
        self._bus = bus
        self._sandboxes = sandboxes
        self._containers = containers

    async def GetContainerEvents(  # noqa: N802
        self, request: api_pb2.GetEventsRequest, context: object
    ) -> AsyncIterator[api_pb2.ContainerEventResponse]:
        async with self._bus.subscribe(_cri_container_event) as subscription:
            async for event in subscription:
                assert isinstance(event, ContainerEvent)
                yield self._response(event)

    def _response(self, event: ContainerEvent) -> api_pb2.ContainerEventResponse:
        response = api_pb2.ContainerEventResponse(
            container_id=event.container_id,
            container_event_type=api_pb2.ContainerEventType.Value(f"CONTAINER_{event.type.name}_EVENT"),
            created_at=event.created_at,
        )
        found = self._sandboxes.ctx.sandboxes.find(event.sandbox_id)
        if found is not None:
            response.pod_sandbox_status.CopyFrom(convert.pod_sandbox_status(*found))
            response.containers_statuses.extend(
                convert.container_status(m, s)
                for m, s in self._containers.list()
                if m.sandbox_id == event.sandbox_id
            )
        return response
