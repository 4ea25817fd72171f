"""Small helpers for driving a narwhald over CRI in integration tests."""
from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import grpc
import mkimage
from cri_api.v1 import api_pb2, api_pb2_grpc

from lib.registry import Registry
from lib.wait import wait_for as wait_for  # the one polling helper, re-exported for cri.wait_for callers

_pushed: dict[tuple[int, str], str] = {}


def push_busybox(registry: Registry, repo: str = "library/busybox", tag: str = "latest") -> str:
    """Push the offline busybox image once per registry; returns the pullable reference."""
    key = (registry.port, f"{repo}:{tag}")
    if key not in _pushed:
        client = mkimage.RegistryClient(registry.host)
        client.push_image(repo, tag, mkimage.build("busybox"))
        _pushed[key] = f"{registry.host}/{repo}:{tag}"
    return _pushed[key]


def pull(images: api_pb2_grpc.ImageServiceStub, ref: str) -> str:
    return images.PullImage(api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=ref)), timeout=120).image_ref


def sandbox_config(name: str = "", log_dir: Path | None = None, host_network: bool = False,
                   share_pid: bool = False, **kwargs: object) -> api_pb2.PodSandboxConfig:
    name = name or f"pod-{uuid.uuid4().hex[:8]}"
    ns = api_pb2.NamespaceOption(
        network=api_pb2.NODE if host_network else api_pb2.POD,
        pid=api_pb2.POD if share_pid else api_pb2.CONTAINER,
    )
    return api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(name=name, uid=uuid.uuid4().hex, namespace="test"),
        hostname=name,
        log_directory=str(log_dir) if log_dir else "",
        linux=api_pb2.LinuxPodSandboxConfig(security_context=api_pb2.LinuxSandboxSecurityContext(
            namespace_options=ns)),
        **kwargs,  # type: ignore[arg-type]
    )


def container_config(image: str, command: list[str], name: str = "c", log_path: str = "",
                     **kwargs: object) -> api_pb2.ContainerConfig:
    return api_pb2.ContainerConfig(
        metadata=api_pb2.ContainerMetadata(name=name),
        image=api_pb2.ImageSpec(image=image),
        command=command,
        log_path=log_path,
        **kwargs,  # type: ignore[arg-type]
    )


def container_state(rs: api_pb2_grpc.RuntimeServiceStub, cid: str) -> api_pb2.ContainerStatus:
    return rs.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=cid), timeout=10).status


def code_of(call: Callable[[], object]) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as err:
        return err.code()
    return grpc.StatusCode.OK
