"""cri.interceptors.ErrorMapping: each method's handler wrapped once (issue 21, round three), errors still mapped."""
from __future__ import annotations

from typing import Any

import grpc
import pytest

from cri.interceptors import ErrorMapping
from pkg import errors
from pkg.metrics import Metrics


class _Details:
    def __init__(self, method: str) -> None:
        self.method = method


class _Context:
    def __init__(self) -> None:
        self.aborted: tuple[grpc.StatusCode, str] | None = None

    async def abort(self, code: grpc.StatusCode, message: str) -> None:
        self.aborted = (code, message)
        raise grpc.aio.AbortError()


async def _ok(request: Any, context: Any) -> str:
    return f"answer to {request}"


async def _missing(request: Any, context: Any) -> str:
    raise errors.NotFound("container x not found")


def _handler(behaviour: Any) -> grpc.RpcMethodHandler:
    return grpc.unary_unary_rpc_method_handler(behaviour)


async def test_a_methods_handler_is_wrapped_once_and_still_maps_errors() -> None:
    metrics = Metrics()
    mapping = ErrorMapping(metrics)
    ok, missing = _handler(_ok), _handler(_missing)

    async def served(details: Any) -> grpc.RpcMethodHandler:
        return ok if details.method.endswith("/Version") else missing

    first = await mapping.intercept_service(served, _Details("/runtime.v1.RuntimeService/Version"))
    again = await mapping.intercept_service(served, _Details("/runtime.v1.RuntimeService/Version"))
    assert first is again and first is not ok
    assert await first.unary_unary("v", _Context()) == "answer to v"
    assert metrics.cri_requests.labels(method="Version", code="OK")._value.get() == 1

    wrapped = await mapping.intercept_service(served, _Details("/runtime.v1.RuntimeService/ExecSync"))
    context = _Context()
    with pytest.raises(grpc.aio.AbortError):
        await wrapped.unary_unary("x", context)
    assert context.aborted == (grpc.StatusCode.NOT_FOUND, "container x not found")

    ok = _handler(_ok)  # a servicer's handler replaced (never in narwhald, but then it is wrapped anew)
    assert await mapping.intercept_service(served, _Details("/runtime.v1.RuntimeService/Version")) is not first
