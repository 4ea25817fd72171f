"""RuntimeService: binds each RPC to the pkg service that does the work.

Version and Status live here; sandbox, container, exec and stats RPCs are
added by their own modules as they land (see CONTRIBUTING.md).
"""
from __future__ import annotations

import json

import grpc
from cri_api.v1 import api_pb2, api_pb2_grpc

from cri import convert
from pkg.config import Config
from pkg.health import HealthChecker
from pkg.version import CRI_API_VERSION, RUNTIME_NAME, narwhal_version

KUBE_API_VERSION = "0.1.0"  # the only value the CRI Version request/response defines


class RuntimeService(api_pb2_grpc.RuntimeServiceServicer):
    def __init__(self, cfg: Config, health: HealthChecker) -> None:
        self._cfg = cfg
        self._health = health

    async def Version(  # noqa: N802 - gRPC method names
        self, request: api_pb2.VersionRequest, context: grpc.aio.ServicerContext
    ) -> api_pb2.VersionResponse:
        return api_pb2.VersionResponse(
            version=KUBE_API_VERSION,
            runtime_name=RUNTIME_NAME,
            runtime_version=narwhal_version(),
            runtime_api_version=CRI_API_VERSION,
        )

    async def Status(  # noqa: N802
        self, request: api_pb2.StatusRequest, context: grpc.aio.ServicerContext
    ) -> api_pb2.StatusResponse:
        conditions = await self._health.conditions()
        response = api_pb2.StatusResponse(
            status=api_pb2.RuntimeStatus(conditions=[convert.runtime_condition(c) for c in conditions])
        )
        if request.verbose:
            response.info["config"] = json.dumps(
                {
                    "root": str(self._cfg.root),
                    "state": str(self._cfg.state),
                    "containerdAddress": str(self._cfg.containerd_socket),
                    "containerdNamespace": self._cfg.containerd_namespace,
                    "cniConfDir": str(self._cfg.cni_conf_dir),
                    "cniBinDirs": [str(p) for p in self._cfg.cni_bin_dir],
                }
            )
        return response
