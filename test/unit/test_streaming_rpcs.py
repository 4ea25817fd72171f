"""CRI Exec/Attach/PortForward: validation before a token is minted, and URLs that work once."""
from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from cri_api.v1 import api_pb2
from lib import spdy_client
from lib.fake_streaming import FakeBackend

from cri.streaming import StreamingHandlers
from pkg import errors
from pkg.streaming.server import StreamingServer


@pytest.fixture
async def handlers() -> AsyncIterator[tuple[StreamingHandlers, StreamingServer]]:
    backend = FakeBackend()
    server = StreamingServer(backend, "127.0.0.1:0")
    await server.start()
    yield StreamingHandlers(server, backend), server
    await server.stop()


async def test_exec_returns_a_single_use_url(handlers: tuple[StreamingHandlers, StreamingServer]) -> None:
    h, server = handlers
    resp = await h.Exec(api_pb2.ExecRequest(container_id="c1", cmd=["out-err", "a", "b", "0"], stdout=True,
                                            stderr=True), None)
    assert resp.url.startswith(server.base_url + "/exec/")
    out, err, status = await spdy_client.run_exec(resp.url)
    assert (out, err, status) == (b"a", b"b", {"metadata": {}, "status": "Success"})
    with pytest.raises(spdy_client.UpgradeRefused):
        await spdy_client.run_exec(resp.url)


@pytest.mark.parametrize("request_, kind", [
    (api_pb2.ExecRequest(container_id="c1", stdout=True), errors.InvalidArgument),
    (api_pb2.ExecRequest(cmd=["ls"], stdout=True), errors.InvalidArgument),
    (api_pb2.ExecRequest(container_id="c1", cmd=["ls"]), errors.InvalidArgument),
    (api_pb2.ExecRequest(container_id="c1", cmd=["ls"], tty=True, stdout=True, stderr=True), errors.InvalidArgument),
    (api_pb2.ExecRequest(container_id="nope", cmd=["ls"], stdout=True), errors.NotFound),
], ids=["no-cmd", "no-container", "no-streams", "tty-and-stderr", "unknown-container"])
async def test_exec_validation(handlers: tuple[StreamingHandlers, StreamingServer],
                               request_: api_pb2.ExecRequest, kind: type[Exception]) -> None:
    h, server = handlers
    with pytest.raises(kind):
        await h.Exec(request_, None)
    assert len(server.tokens) == 0


async def test_attach_and_port_forward(handlers: tuple[StreamingHandlers, StreamingServer]) -> None:
    h, server = handlers
    attach = await h.Attach(api_pb2.AttachRequest(container_id="c1", stdin=True, stdout=True), None)
    assert attach.url.startswith(server.base_url + "/attach/")
    with pytest.raises(errors.NotFound):
        await h.Attach(api_pb2.AttachRequest(container_id="nope", stdout=True), None)
    pf = await h.PortForward(api_pb2.PortForwardRequest(pod_sandbox_id="pod1", port=[80]), None)
    assert pf.url.startswith(server.base_url + "/portforward/")
    with pytest.raises(errors.InvalidArgument):
        await h.PortForward(api_pb2.PortForwardRequest(pod_sandbox_id="pod1", port=[70000]), None)
    with pytest.raises(errors.NotFound):
        await h.PortForward(api_pb2.PortForwardRequest(pod_sandbox_id="nope"), None)
    with pytest.raises(errors.InvalidArgument):
        await h.PortForward(api_pb2.PortForwardRequest(), None)
