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
        # The wrapped handler of each method, made once: the servicer's handler for a method is the same object
        # on every call, and wrapping it anew (closures, a handler tuple) was per-RPC work (issue 21, round three).
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler
        kept = self._wrapped.get(details.method)
        if kept is not None and kept[0] is handler:
            return kept[1]
        wrapped = self._wrap(details.method.rsplit("/", 1)[-1], handler)
        self._wrapped[details.method] = (handler, wrapped)
        return wrapped

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
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
        latency = self._metrics.cri_latency.labels(method=method)  # the method's series, looked up once
        succeeded = self._metrics.cri_requests.labels(method=method, code="OK")

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
                    latency.observe(elapsed)
                succeeded.inc()
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
