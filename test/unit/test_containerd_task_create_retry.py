"""tasks.create retries when the group's shim went away between `shim start` and containerd's dial (the race a pod
without a pause container has when one container is deleted while the next is created); other errors are raised."""
from __future__ import annotations

from typing import Any

import grpc
import pytest

from pkg import errors
from pkg.containerd import tasks

WENT_AWAY = ("failed to start shim: start failed: dial unix /run/containerd/s/ab12: connect: no such file or "
             "directory")


def _rpc_error(details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(grpc.StatusCode.INTERNAL, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


class _Tasks:
    def __init__(self, failures: list[str]) -> None:
        self.failures = failures
        self.calls = 0

    async def Create(self, request: Any, timeout: float) -> Any:  # noqa: N802 (grpc's name)
        self.calls += 1
        if self.failures:
            raise _rpc_error(self.failures.pop(0))
        return type("Resp", (), {"pid": 4242})()


class _Client:
    def __init__(self, failures: list[str]) -> None:
        self.tasks = _Tasks(failures)


async def test_a_shim_that_went_away_is_started_again() -> None:
    client = _Client([WENT_AWAY, WENT_AWAY.replace("no such file or directory", "connection refused")])
    assert await tasks.create(client, "c1", []) == 4242  # type: ignore[arg-type]
    assert client.tasks.calls == 3
    client = _Client(["failed to create shim task: ttrpc: closed: unknown"])
    assert await tasks.create(client, "c1", []) == 4242  # type: ignore[arg-type]
    assert client.tasks.calls == 2


async def test_other_errors_and_a_shim_that_keeps_failing_are_raised() -> None:
    client = _Client(["failed to create shim task: OCI runtime create failed: exec: no such file"])
    with pytest.raises(errors.Internal):
        await tasks.create(client, "c1", [])  # type: ignore[arg-type]
    assert client.tasks.calls == 1
    client = _Client([WENT_AWAY] * tasks.SHIM_START_ATTEMPTS)
    with pytest.raises(errors.Internal, match="failed to start shim"):
        await tasks.create(client, "c1", [])  # type: ignore[arg-type]
    assert client.tasks.calls == tasks.SHIM_START_ATTEMPTS
