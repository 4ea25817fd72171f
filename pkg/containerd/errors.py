"""Translate containerd's gRPC errors into the core's error taxonomy (errgrpc.ToNative)."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import grpc

from pkg import errors

CODES: dict[grpc.StatusCode, type[errors.NarwhalError]] = {
    grpc.StatusCode.NOT_FOUND: errors.NotFound,
    grpc.StatusCode.ALREADY_EXISTS: errors.AlreadyExists,
    grpc.StatusCode.INVALID_ARGUMENT: errors.InvalidArgument,
    grpc.StatusCode.FAILED_PRECONDITION: errors.FailedPrecondition,
    grpc.StatusCode.ABORTED: errors.Conflict,
    grpc.StatusCode.UNAVAILABLE: errors.Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: errors.DeadlineExceeded,
    grpc.StatusCode.PERMISSION_DENIED: errors.PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: errors.Unauthenticated,
    grpc.StatusCode.UNIMPLEMENTED: errors.NotImplementedYet,
    grpc.StatusCode.RESOURCE_EXHAUSTED: errors.ResourceExhausted,
    grpc.StatusCode.CANCELLED: errors.Cancelled,
}


def from_grpc(err: grpc.aio.AioRpcError, what: str = "containerd") -> errors.NarwhalError:
    kind = CODES.get(err.code(), errors.Internal)
    return kind(f"{what}: {err.details() or err.code().name.lower()}")


@contextmanager
def translate(what: str = "containerd") -> Iterator[None]:
    """``with translate("create task"):`` turns AioRpcError into a pkg error."""
    try:
        yield
    except grpc.aio.AioRpcError as err:
        raise from_grpc(err, what) from err
