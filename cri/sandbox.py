"""RunPodSandbox, StopPodSandbox, RemovePodSandbox, PodSandboxStatus, ListPodSandbox."""

from __future__ import annotations

import json

from cri_api.v1 import api_pb2

from cri import convert
from pkg import errors
from pkg.cri import verbose_info
from pkg.runtime.containers import ContainerService
from pkg.runtime.sandboxes import SandboxService


class SandboxHandlers:
    def __init__(self, sandboxes: SandboxService, containers: ContainerService) -> None:
        self._sandboxes = sandboxes
        self._containers = containers

    async def RunPodSandbox(
        self, request: api_pb2.RunPodSandboxRequest, context: object
    ) -> api_pb2.RunPodSandboxResponse:  # noqa: N802
        if not request.HasField("config"):
            raise errors.InvalidArgument("sandbox config must be set")
        sandbox_id = await self._sandboxes.run(convert.sandbox_config(request.config), request.runtime_handler)
        return api_pb2.RunPodSandboxResponse(pod_sandbox_id=sandbox_id)

    async def StopPodSandbox(
        self, request: api_pb2.StopPodSandboxRequest, context: object
    ) -> api_pb2.StopPodSandboxResponse:  # noqa: N802
        try:
            self._sandboxes.get(request.pod_sandbox_id)
        except errors.NotFound:
            # api.proto: StopPodSandbox must not fail once every resource is reclaimed, a removed sandbox included.
            return api_pb2.StopPodSandboxResponse()
        await self._sandboxes.stop(request.pod_sandbox_id)
        return api_pb2.StopPodSandboxResponse()

    async def RemovePodSandbox(
        self, request: api_pb2.RemovePodSandboxRequest, context: object
    ) -> api_pb2.RemovePodSandboxResponse:  # noqa: N802
        await self._sandboxes.remove(request.pod_sandbox_id)
        return api_pb2.RemovePodSandboxResponse()

    async def PodSandboxStatus(
        self, request: api_pb2.PodSandboxStatusRequest, context: object
    ) -> api_pb2.PodSandboxStatusResponse:  # noqa: N802
        metadata, status = self._sandboxes.get(request.pod_sandbox_id)
        response = api_pb2.PodSandboxStatusResponse(status=convert.pod_sandbox_status(metadata, status))
        if request.verbose:
            info = await verbose_info.sandbox_info(self._sandboxes.ctx, metadata, status)
            response.info["info"] = json.dumps(info)
        return response

    async def ListPodSandbox(
        self, request: api_pb2.ListPodSandboxRequest, context: object
    ) -> api_pb2.ListPodSandboxResponse:  # noqa: N802
        f = request.filter
        items = []
        for metadata, status in self._sandboxes.list():
            if f.id and not metadata.id.startswith(f.id):
                continue
            if f.HasField("state") and convert.sandbox_state(status.state) != f.state.state:
                continue
            if any(metadata.config.labels.get(k) != v for k, v in f.label_selector.items()):
                continue
            items.append(convert.pod_sandbox(metadata, status))
        return api_pb2.ListPodSandboxResponse(items=items)
