"""Cross-cutting concerns of the CRI server in one place: error mapping, request ids, logging, metrics.

Handlers raise ``pkg.errors`` kinds; this interceptor turns them into gRPC
statuses exactly once.  Anything else is a bug: it is logged with its
traceback and reported as INTERNAL, never as a bare traceback to the client.
Every RPC runs in a request scope (``pkg.logsetup``), so each line the core
logs for it carries its request id; the id is logged with the outcome.
"""
from __future__ import annotations

import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from cri.errors import code_for
from pkg import errors
from pkg.logsetup import request_scope
from pkg.metrics import Metrics

log = logging.getLogger("narwhal.cri")

# Polled every second or so by kubelet: their successes are not worth a debug line each.
_QUIET = frozenset({"Version", "Status", "ListPodSandbox", "ListContainers", "ListContainerStats",
                    "ListPodSandboxStats", "ListPodSandboxMetrics", "ImageFsInfo", "ListImages"})


class ErrorMapping(grpc.aio.ServerInterceptor):
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler
        method = details.method.rsplit("/", 1)[-1]
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(method, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(method, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    async def _fail(self, method: str, context: grpc.aio.ServicerContext, exc: Exception) -> None:
        if isinstance(exc, errors.NarwhalError):
            code, message = code_for(exc), exc.message
            log.debug("%s -> %s: %s", method, code.name, message)
        else:
            code, message = grpc.StatusCode.INTERNAL, f"internal error: {exc!r}"
            log.exception("%s failed with an unexpected error", method)
        self._metrics.cri_requests.labels(method=method, code=code.name).inc()
        await context.abort(code, message)

    def _wrap_unary(self, method: str, behaviour: Any) -> Any:
        async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
            with request_scope():
                start = time.monotonic()
                try:
                    response = await behaviour(request, context)
                except (grpc.aio.AbortError, KeyboardInterrupt):
                    raise
                except Exception as exc:  # noqa: BLE001 - mapped below
                    await self._fail(method, context, exc)
                    raise AssertionError("unreachable") from None
                finally:
                    elapsed = time.monotonic() - start
                    self._metrics.cri_latency.labels(method=method).observe(elapsed)
                self._metrics.cri_requests.labels(method=method, code="OK").inc()
                if method not in _QUIET:
                    log.debug("%s -> OK in %.1f ms", method, elapsed * 1000)
                return response

        return handle

    def _wrap_stream(self, method: str, behaviour: Any) -> Any:
        if inspect.isasyncgenfunction(behaviour):

            async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                with request_scope():
                    log.debug("%s: stream opened", method)
                    try:
                        async for item in behaviour(request, context):
                            yield item
                    except grpc.aio.AbortError:
                        raise
                    except Exception as exc:  # noqa: BLE001
                        await self._fail(method, context, exc)
                    self._metrics.cri_requests.labels(method=method, code="OK").inc()

            return stream

        async def call(request: Any, context: grpc.aio.ServicerContext) -> None:
            with request_scope():
                try:
                    await behaviour(request, context)
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:  # noqa: BLE001
                    await self._fail(method, context, exc)

        return call
