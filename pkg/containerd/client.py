"""A grpc.aio client for containerd, scoped to one containerd namespace.

Every call carries the ``containerd-namespace`` metadata (added by one
interceptor, so no call site can forget it).  The generated stubs live in
``pkg.containerd.api`` (built by ``make setup`` from Debian's .proto files).
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from pkg import errors
from pkg import metrics as metrics_mod
from pkg.containerd.errors import translate

try:
    from pkg.containerd import content_wire
    from pkg.containerd.shims import ShimTasks
    from pkg.containerd.stubs import ServiceStub
except ImportError as exc:  # pragma: no cover - depends on the build step
    raise ImportError(
        "containerd gRPC stubs are missing: run `make setup` (hack/gen_containerd_api.py)"
    ) from exc

from google.protobuf import empty_pb2

MAX_MESSAGE = 64 << 20
_CONTENT_WRITE = "/containerd.services.content.v1.Content/Write"
_HEALTH_CHECK = "/grpc.health.v1.Health/Check"
_SERVING = b"\x08\x01"  # HealthCheckResponse{status: SERVING}


class _NamespaceMixin:
    def __init__(self, namespace: str) -> None:
        self._md = ("containerd-namespace", namespace)

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        metadata.add(*self._md)
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )


# grpc.aio files each interceptor under the first call kind it implements, so one class per kind.
class _UnaryUnary(_NamespaceMixin, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _UnaryStream(_NamespaceMixin, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _StreamUnary(_NamespaceMixin, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
        return await continuation(self._details(details), request_iterator)


class _StreamStream(_NamespaceMixin, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
        return await continuation(self._details(details), request_iterator)


class _Timed(grpc.aio.UnaryUnaryClientInterceptor):
    """narwhal_containerd_request_duration_seconds and _errors_total for every unary call."""

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        service, _, name = method.rpartition("/")
        service = service.rsplit(".", 1)[-1]  # /containerd.services.tasks.v1.Tasks -> Tasks
        m = metrics_mod.current()
        start = time.monotonic()
        call = await continuation(details, request)
        try:
            await call  # the caller awaits it again and gets the same response (or error)
        except grpc.aio.AioRpcError as err:
            m.containerd_errors.labels(service=service, method=name, code=err.code().name).inc()
        finally:
            m.containerd_latency.labels(service=service, method=name).observe(time.monotonic() - start)
        return call


class Client:
    """Connection to one containerd, with one stub per service."""

    def __init__(self, address: Path, namespace: str, *, shim_state: Path | None = None) -> None:
        """``shim_state``: the state dir of a containerd narwhald runs itself, whose tasks' shims exec
        processes then go to directly (pkg.containerd.shims); None: everything through containerd."""
        self.address = address
        self.namespace = namespace
        self.shims = ShimTasks(shim_state, namespace) if shim_state is not None else None
        self.channel = grpc.aio.insecure_channel(
            f"unix://{address}",
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE),
                ("grpc.max_send_message_length", MAX_MESSAGE),
                ("grpc.enable_http_proxy", 0),
            ],
            interceptors=[_Timed(), *(cls(namespace) for cls in (_UnaryUnary, _UnaryStream, _StreamUnary,
                                                                 _StreamStream))],
        )
        ch = self.channel
        api = "pkg.containerd.api.services"
        self.containers = ServiceStub(ch, f"{api}.containers.v1.containers_pb2", "Containers")
        self.content = ServiceStub(ch, f"{api}.content.v1.content_pb2", "Content")
        self.diff = ServiceStub(ch, f"{api}.diff.v1.diff_pb2", "Diff")
        self.events = ServiceStub(ch, f"{api}.events.v1.events_pb2", "Events")
        self.images = ServiceStub(ch, f"{api}.images.v1.images_pb2", "Images")
        self.leases = ServiceStub(ch, f"{api}.leases.v1.leases_pb2", "Leases")
        self.namespaces = ServiceStub(ch, f"{api}.namespaces.v1.namespace_pb2", "Namespaces")
        self.snapshots = ServiceStub(ch, f"{api}.snapshots.v1.snapshots_pb2", "Snapshots")
        self.tasks = ServiceStub(ch, f"{api}.tasks.v1.tasks_pb2", "Tasks")
        self.version_service = ServiceStub(ch, f"{api}.version.v1.version_pb2", "Version")
        self._health = ch.unary_unary(
            _HEALTH_CHECK, request_serializer=lambda b: b, response_deserializer=lambda b: b
        )
        self._bulk: grpc.aio.Channel | None = None

    def content_write(self, metadata: Sequence[tuple[str, str]] = ()) -> grpc.aio.StreamStreamCall:
        """A Content.Write stream for blob data, on a channel of its own without interceptors.

        Requests are bytes (``pkg.containerd.content_wire.write_request``), responses WriteContentResponse.
        grpc.aio routes every message of an intercepted stream through a queue and a task of its own, and the
        main channel's connection is shared with the pull's unpacks and everything else narwhald asks; a
        pull's megabytes go straight to their own connection instead (made on first use: a node that never
        pulls never opens it).  The namespace rides in the call's metadata, as the interceptor would add it.
        """
        if self._bulk is None:
            self._bulk = grpc.aio.insecure_channel(
                f"unix://{self.address}",
                options=[
                    ("grpc.max_send_message_length", MAX_MESSAGE),
                    ("grpc.enable_http_proxy", 0),
                    ("grpc.use_local_subchannel_pool", 1),  # a connection of its own, not the main channel's
                ],
            )
        method = self._bulk.stream_stream(_CONTENT_WRITE, request_serializer=None,
                                          response_deserializer=content_wire.decode_response)
        return method(metadata=(("containerd-namespace", self.namespace), *metadata))

    async def version(self, timeout: float = 5.0) -> tuple[str, str]:
        """containerd's (version, revision)."""
        with translate("containerd version"):
            resp = await self.version_service.Version(empty_pb2.Empty(), timeout=timeout)
        return resp.version, resp.revision

    async def healthy(self, timeout: float = 2.0) -> bool:
        """True when containerd's gRPC health service reports SERVING."""
        try:
            return bool(await self._health(b"", timeout=timeout) == _SERVING)
        except (TimeoutError, grpc.aio.AioRpcError):
            return False

    async def wait_ready(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not await self.healthy():
            if loop.time() > deadline:
                raise errors.Unavailable(f"containerd at {self.address} is not answering")
            await asyncio.sleep(0.1)

    async def close(self) -> None:
        if self.shims is not None:
            await self.shims.close()
        await self.channel.close()
        if self._bulk is not None:
            await self._bulk.close()
