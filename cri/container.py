"""CreateContainer, StartContainer, StopContainer, RemoveContainer, ContainerStatus,
ListContainers, UpdateContainerResources, ReopenContainerLog."""

from __future__ import annotations

import json

from cri_api.v1 import api_pb2

from cri import convert
from pkg import errors
from pkg.cri import verbose_info
from pkg.runtime.containers import ContainerService


class ContainerHandlers:
    def __init__(self, containers: ContainerService) -> None:
        self._containers = containers

    async def CreateContainer(
        self, request: api_pb2.CreateContainerRequest, context: object
    ) -> api_pb2.CreateContainerResponse:  # noqa: N802
        if not request.HasField("config"):
            raise errors.InvalidArgument("container config must be set")
        container_id = await self._containers.create(request.pod_sandbox_id, convert.container_config(request.config))
        return api_pb2.CreateContainerResponse(container_id=container_id)

    async def StartContainer(
        self, request: api_pb2.StartContainerRequest, context: object
    ) -> api_pb2.StartContainerResponse:  # noqa: N802
        await self._containers.start(request.container_id)
        return api_pb2.StartContainerResponse()

    async def StopContainer(
        self, request: api_pb2.StopContainerRequest, context: object
    ) -> api_pb2.StopContainerResponse:  # noqa: N802
        try:
            self._containers.get(request.container_id)
        except errors.NotFound:
            # api.proto: StopContainer is idempotent; nothing left to reclaim is success (containerd does the same).
            return api_pb2.StopContainerResponse()
        await self._containers.stop(request.container_id, max(request.timeout, 0))
        return api_pb2.StopContainerResponse()

    async def RemoveContainer(
        self, request: api_pb2.RemoveContainerRequest, context: object
    ) -> api_pb2.RemoveContainerResponse:  # noqa: N802
        await self._containers.remove(request.container_id)
        return api_pb2.RemoveContainerResponse()

    async def ContainerStatus(
        self, request: api_pb2.ContainerStatusRequest, context: object
    ) -> api_pb2.ContainerStatusResponse:  # noqa: N802
        metadata, status = self._containers.get(request.container_id)
        response = api_pb2.ContainerStatusResponse(status=convert.container_status(metadata, status))
        if request.verbose:
            info = await verbose_info.container_info(self._containers.ctx, metadata, status)
            response.info["info"] = json.dumps(info)
        return response

    async def ListContainers(
        self, request: api_pb2.ListContainersRequest, context: object
    ) -> api_pb2.ListContainersResponse:  # noqa: N802
        f = request.filter
        items = []
        for metadata, status in self._containers.list():
            if f.id and not metadata.id.startswith(f.id):
                continue
            if f.pod_sandbox_id and not metadata.sandbox_id.startswith(f.pod_sandbox_id):
                continue
            if f.HasField("state") and convert.CONTAINER_STATES[status.state] != f.state.state:
                continue
            if any(metadata.config.labels.get(k) != v for k, v in f.label_selector.items()):
                continue
            items.append(convert.container(metadata, status))
        return api_pb2.ListContainersResponse(containers=items)

    async def UpdateContainerResources(
        self, request: api_pb2.UpdateContainerResourcesRequest, context: object
    ) -> api_pb2.UpdateContainerResourcesResponse:  # noqa: N802,E501
        if not request.HasField("linux"):
            raise errors.InvalidArgument("linux resources must be set")
        await self._containers.update_resources(request.container_id, convert.resources(request.linux))
        return api_pb2.UpdateContainerResourcesResponse()

    async def ReopenContainerLog(
        self, request: api_pb2.ReopenContainerLogRequest, context: object
    ) -> api_pb2.ReopenContainerLogResponse:  # noqa: N802
        await self._containers.reopen_log(request.container_id)
        return api_pb2.ReopenContainerLogResponse()
