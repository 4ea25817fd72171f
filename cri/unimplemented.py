"""Fill a servicer's missing RPCs with async handlers that answer UNIMPLEMENTED.

The generated base classes are synchronous, which grpc.aio cannot run
without a thread pool; and a clear "X is not implemented" beats a bare code.
"""
from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from google.protobuf.descriptor import ServiceDescriptor

from pkg import errors


def fill(servicer: Any, base: type, service: ServiceDescriptor) -> None:
    for method in service.methods:
        name = method.name
        if name in vars(servicer) or getattr(type(servicer), name, None) is not getattr(base, name, None):
            continue  # implemented (on the class, or bound from a handler object)
        setattr(servicer, name, _stub(name, method.server_streaming))


def _stub(name: str, streaming: bool) -> Any:
    message = f"{name} is not implemented by narwhal yet"
    if streaming:

        async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
            raise errors.NotImplementedYet(message)
            yield  # pragma: no cover - makes this an async generator

        return stream

    async def unary(request: Any, context: Any) -> Any:
        raise errors.NotImplementedYet(message)

    return unary
