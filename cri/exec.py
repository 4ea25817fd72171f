"""ExecSync (the streaming Exec/Attach/PortForward RPCs live in cri/streaming.py)."""

from __future__ import annotations

from cri_api.v1 import api_pb2

from pkg.runtime.containers import ContainerService


class ExecHandlers:
    def __init__(self, containers: ContainerService) -> None:
        self._containers = containers

    async def ExecSync(self, request: api_pb2.ExecSyncRequest, context: object) -> api_pb2.ExecSyncResponse:  # noqa: N802
        result = await self._containers.exec_sync(request.container_id, list(request.cmd), float(request.timeout))
        return api_pb2.ExecSyncResponse(stdout=result.stdout, stderr=result.stderr, exit_code=result.exit_code)
