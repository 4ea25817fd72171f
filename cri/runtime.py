"""RuntimeService: binds each RPC to the handler module that owns it.

Version, Status and RuntimeConfig live here; sandbox, container, exec, stats
and events RPCs live in their own modules and are bound by name, so this
class never grows into a god object.
"""
from __future__ import annotations

import json
from typing import Any

import grpc
from cri_api.v1 import api_pb2, api_pb2_grpc

from cri import convert
from pkg import errors
from pkg.config import Config
from pkg.health import HealthChecker
from pkg.runtime.features import handler_features
from pkg.version import CRI_API_VERSION, RUNTIME_NAME, narwhal_version

KUBE_API_VERSION = "0.1.0"  # the only value the CRI Version request/response defines
_RPC_NAMES = set(api_pb2.DESCRIPTOR.services_by_name["RuntimeService"].methods_by_name)


class RuntimeService(api_pb2_grpc.RuntimeServiceServicer):
    def __init__(self, cfg: Config, health: HealthChecker, *handlers: Any) -> None:
        self._cfg = cfg
        self._health = health
        for handler in handlers:
            for name in _RPC_NAMES:
                method = getattr(handler, name, None)
                if method is not None:
                    setattr(self, name, method)

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
            status=api_pb2.RuntimeStatus(conditions=[convert.runtime_condition(c) for c in conditions]),
            runtime_handlers=await self._runtime_handlers(),
            # SupplementalGroupsPolicy Strict and Merge are both honoured (pkg/runtime/user.py).
            features=api_pb2.RuntimeFeatures(supplemental_groups_policy=True),
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

    async def _runtime_handlers(self) -> list[api_pb2.RuntimeHandler]:
        """Every configured handler, plus the default one under the empty name (containerd does the same)."""
        handlers = []
        for name, binary in [("", self._cfg.runtime_handlers["runc"]), *sorted(self._cfg.runtime_handlers.items())]:
            features = await handler_features(binary)
            handlers.append(api_pb2.RuntimeHandler(name=name, features=api_pb2.RuntimeHandlerFeatures(
                recursive_read_only_mounts=features.recursive_read_only_mounts,
                user_namespaces=features.user_namespaces)))
        return handlers

    async def RuntimeConfig(  # noqa: N802
        self, request: api_pb2.RuntimeConfigRequest, context: grpc.aio.ServicerContext
    ) -> api_pb2.RuntimeConfigResponse:
        """Narwhal drives runc with the cgroupfs driver (containerd's runc options, SystemdCgroup off)."""
        return api_pb2.RuntimeConfigResponse(
            linux=api_pb2.LinuxRuntimeConfiguration(cgroup_driver=api_pb2.CGROUPFS)
        )

    async def UpdateRuntimeConfig(  # noqa: N802
        self, request: api_pb2.UpdateRuntimeConfigRequest, context: grpc.aio.ServicerContext
    ) -> api_pb2.UpdateRuntimeConfigResponse:
        """kubelet sends the pod CIDR here; CNI config owns addressing, so it is accepted and ignored,
        as containerd does when its CNI config has no template."""
        return api_pb2.UpdateRuntimeConfigResponse()

    async def UpdatePodSandboxResources(  # noqa: N802
        self, request: api_pb2.UpdatePodSandboxResourcesRequest, context: grpc.aio.ServicerContext
    ) -> api_pb2.UpdatePodSandboxResourcesResponse:
        """kubelet calls this after it has resized the pod-level cgroup itself; nothing is left to do."""
        return api_pb2.UpdatePodSandboxResourcesResponse()

    async def CheckpointContainer(  # noqa: N802
        self, request: api_pb2.CheckpointContainerRequest, context: grpc.aio.ServicerContext
    ) -> api_pb2.CheckpointContainerResponse:
        raise errors.NotImplementedYet("CheckpointContainer needs CRIU, which is not available on this host")
