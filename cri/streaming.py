"""Exec, Attach and PortForward: validate, mint a single-use token, return the streaming URL.

The work happens later, when kubelet (or crictl) connects to the URL; see
``pkg/streaming/server.py``.  As in kubelet's streaming server, the request
is checked here so a bad one fails the RPC, not the connection.
"""
from __future__ import annotations

from cri_api.v1 import api_pb2

from pkg import errors
from pkg.streaming import model
from pkg.streaming.backend import StreamingBackend
from pkg.streaming.server import StreamingServer


def _check_streams(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> None:
    if not (stdin or stdout or stderr):
        raise errors.InvalidArgument("one of stdin, stdout or stderr must be set")
    if tty and stderr:
        raise errors.InvalidArgument("tty and stderr cannot both be true")


class StreamingHandlers:
    def __init__(self, server: StreamingServer, backend: StreamingBackend) -> None:
        self._server = server
        self._backend = backend

    async def Exec(self, request: api_pb2.ExecRequest, context: object) -> api_pb2.ExecResponse:  # noqa: N802
        if not request.container_id:
            raise errors.InvalidArgument("container_id is required")
        if not request.cmd:
            raise errors.InvalidArgument("cmd must not be empty")
        _check_streams(request.stdin, request.stdout, request.stderr, request.tty)
        await self._backend.check_container_running(request.container_id)
        url = self._server.url_for(model.ExecRequest(
            request.container_id, tuple(request.cmd), tty=request.tty, stdin=request.stdin,
            stdout=request.stdout, stderr=request.stderr))
        return api_pb2.ExecResponse(url=url)

    async def Attach(self, request: api_pb2.AttachRequest, context: object) -> api_pb2.AttachResponse:  # noqa: N802
        if not request.container_id:
            raise errors.InvalidArgument("container_id is required")
        _check_streams(request.stdin, request.stdout, request.stderr, request.tty)
        await self._backend.check_container_running(request.container_id)
        url = self._server.url_for(model.AttachRequest(
            request.container_id, tty=request.tty, stdin=request.stdin, stdout=request.stdout,
            stderr=request.stderr))
        return api_pb2.AttachResponse(url=url)

    async def PortForward(  # noqa: N802
        self, request: api_pb2.PortForwardRequest, context: object
    ) -> api_pb2.PortForwardResponse:
        if not request.pod_sandbox_id:
            raise errors.InvalidArgument("pod_sandbox_id is required")
        bad = [p for p in request.port if not 0 < p < 65536]
        if bad:
            raise errors.InvalidArgument(f"invalid port(s) {bad}: ports are 1-65535")
        await self._backend.check_sandbox_ready(request.pod_sandbox_id)
        url = self._server.url_for(model.PortForwardRequest(request.pod_sandbox_id, tuple(request.port)))
        return api_pb2.PortForwardResponse(url=url)
