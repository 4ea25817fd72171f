"""critest "Streaming" (cri-tools pkg/validate/streaming.go, streaming_linux.go), ported.

critest drives the URLs with client-go's SPDY executor and port-forwarder;
here test/lib/spdy_client.py speaks the same protocols (v4.channel.k8s.io,
portforward.k8s.io).  client-go's port-forwarder listens on a local port
(12001/12002) and relays one connection per request; the port-forward specs
open that relayed connection directly and send the same GET.
"""
from __future__ import annotations

import asyncio
import time

from cri_api.v1 import api_pb2
from lib import cri, spdy_client
from lib.critest import (  # noqa: F401
    WEB_SERVER_PORT,
    Crit,
    check_main_page,
    crit_daemon_fixture,
    crit_fixture,
    web_server,
)

HOST_NET_CONTAINER_PORT = 12003  # webServerHostNetContainerPort


def _exec_url(crit: Crit, **request: object) -> str:
    url = str(crit.rs.Exec(api_pb2.ExecRequest(**request), timeout=30).url)  # type: ignore[arg-type]
    assert url.startswith("http://") and "//:" not in url, url  # parseURL: the host must not be empty
    return url


def test_runtime_should_support_exec_with_tty_false_and_stdin_false(crit: Crit) -> None:
    """critest: runtime should support exec with tty=false and stdin=false [Conformance]."""
    pod_id, pod_config = crit.pod_for_container()
    cid = crit.create_default(pod_id, pod_config, "container-for-exec-test")
    crit.start(cid)
    url = _exec_url(crit, container_id=cid, cmd=["echo", "-n", "hello"], stdout=True, stderr=True)
    out, err, status = asyncio.run(spdy_client.run_exec(url))
    assert (out, err) == (b"hello", b"")
    assert status is None or status.get("status") == "Success", status


async def _tty_exec(url: str) -> tuple[bytes, dict[str, object] | None]:
    """checkExec with isTty: stdin stays open (critest closes it only after 20 s or once the test is done)."""
    session = await spdy_client.open_exec(url, stdin=True, tty=True)
    try:
        out = await asyncio.wait_for(spdy_client.read_all(session.stdout), 20)
        return out, await session.status()
    finally:
        await session.client.close()


def test_runtime_should_support_exec_with_tty_true_and_stdin_true(crit: Crit) -> None:
    """critest: runtime should support exec with tty=true and stdin=true [Conformance]."""
    pod_id, pod_config = crit.pod_for_container()
    cid = crit.create_default(pod_id, pod_config, "container-for-exec-test")
    crit.start(cid)
    url = _exec_url(crit, container_id=cid, cmd=["echo", "-n", "hello"], stdout=True, tty=True, stdin=True)
    out, status = asyncio.run(_tty_exec(url))
    assert b"hello" in out
    assert status is None or status.get("status") == "Success", status


async def _attach(url: str, command: bytes, expected: bytes, wait: float) -> tuple[bytes, bytes, bytes]:
    """checkAttach: no output while there is no input; `echo -n hello` yields exactly "hello", then nothing."""
    session = await spdy_client.open_exec(url, stdin=True, stdout=True, stderr=True)
    assert session.stdin is not None and session.stdout is not None
    out = bytearray()

    async def pump() -> None:
        assert session.stdout is not None
        while chunk := await session.stdout.read():
            out.extend(chunk)

    reader = asyncio.create_task(pump())
    try:
        await asyncio.sleep(1)
        header = bytes(out)
        await asyncio.sleep(1)
        assert bytes(out) == header, "The container should stop output when there is no input"
        await session.stdin.write(command)
        deadline = time.monotonic() + wait
        while bytes(out)[len(header):] != expected and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        first = bytes(out)[len(header):]
        await asyncio.sleep(3)  # critest's Consistently(3s): nothing else arrives
        settled = bytes(out)[len(header):]
        await session.stdin.close()
        await asyncio.wait_for(reader, 30)
        err = await asyncio.wait_for(spdy_client.read_all(session.stderr), 30)
        return first, settled, err
    finally:
        reader.cancel()
        await session.client.close()


def _attach_shell(crit: Crit, command: bytes, expected: bytes, wait: float = 60) -> tuple[bytes, bytes, bytes]:
    """createShellContainer (/bin/sh, stdin, stdin_once, no TTY, no log path), attached as critest does."""
    pod_id, pod_config = crit.pod_for_container()
    cid = crit.create(pod_id, pod_config, crit.container_config(
        "container-for-attach-test", ["/bin/sh"], linux=api_pb2.LinuxContainerConfig(), stdin=True, stdin_once=True,
        tty=False))
    crit.start(cid)
    url = str(crit.rs.Attach(api_pb2.AttachRequest(container_id=cid, stdin=True, stdout=True, stderr=True,
                                                   tty=False), timeout=30).url)
    return asyncio.run(_attach(url, command, expected, wait))


def test_runtime_should_support_attach(crit: Crit) -> None:
    """critest: runtime should support attach [Conformance] (`echo -n hello` typed into an attached shell).
    The logger writes an unterminated line as a P record once the stream goes quiet, so Attach sees it."""
    first, settled, err = _attach_shell(crit, b"echo -n hello\n", b"hello", wait=10)
    assert first == b"hello", "The stdout of attach should be hello"
    assert settled == b"hello", "The stdout of attach should not contain other things"
    assert err == b"", "The stderr of attach should be empty"


def test_runtime_should_support_attach_with_a_complete_line(crit: Crit) -> None:
    """critest: runtime should support attach [Conformance], with a newline after the echo: every other check of
    the spec (no log path, no output without input, nothing extra, empty stderr) holds."""
    first, settled, err = _attach_shell(crit, b"echo hello\n", b"hello\n")
    assert first == settled == b"hello\n"
    assert err == b""


async def _get_through_forward(url: str, port: int) -> bytes:
    client = await spdy_client.connect(url, ["portforward.k8s.io"])
    try:
        reply, err = await spdy_client.forward_once(client, port, "0", b"GET / HTTP/1.0\r\n\r\n")
        assert err == b"", err
        return reply
    finally:
        await client.close()


def _check_port_forward(crit: Crit, pod_id: str, port: int) -> None:
    url = str(crit.rs.PortForward(api_pb2.PortForwardRequest(pod_sandbox_id=pod_id), timeout=30).url)
    reply = asyncio.run(_get_through_forward(url, port))
    assert reply.split(b"\r\n", 1)[0].split()[1] == b"200", reply[:200]


def test_runtime_should_support_portforward(crit: Crit) -> None:
    """critest: runtime should support portforward [Conformance]."""
    config = crit.pod_config("create-PodSandbox-with-port-mapping",
                             port_mappings=[api_pb2.PortMapping(container_port=WEB_SERVER_PORT)])
    pod_id = crit.run_pod(config)
    crit.start(web_server(crit, pod_id, config, "container-for-portforward-test"))
    check_main_page(crit, pod_id, 0, WEB_SERVER_PORT)
    _check_port_forward(crit, pod_id, WEB_SERVER_PORT)


def test_runtime_should_support_portforward_in_host_network(crit: Crit) -> None:
    """critest: runtime should support portforward in host network."""
    config = crit.pod_config("create-PodSandbox-with-port-mapping",
                             port_mappings=[api_pb2.PortMapping(container_port=HOST_NET_CONTAINER_PORT)])
    config.linux.security_context.namespace_options.network = api_pb2.NODE
    pod_id = crit.run_pod(config)
    crit.start(web_server(crit, pod_id, config, "container-for-host-net-portforward-test",
                          port=HOST_NET_CONTAINER_PORT))
    check_main_page(crit, "", HOST_NET_CONTAINER_PORT, 0)
    _check_port_forward(crit, pod_id, HOST_NET_CONTAINER_PORT)


_ = cri
