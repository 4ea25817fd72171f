"""Exec and PortForward through narwhald's CRI, as kubelet uses them: RPC -> URL -> SPDY session."""
from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

from cri_api.v1 import api_pb2
from lib import cri, spdy_client
from lib.daemon import DaemonProcess
from lib.registry import Registry

SERVE = ["sh", "-c", "mkdir -p /www && echo pod-page > /www/index.html && exec httpd -f -p 8080 -h /www"]
STTY_LINE = rb"(?m)^(?:(\d+) (\d+)|stty:.*)\r?$"


async def _tty_size_after_resize(url: str, width: int, height: int) -> tuple[int, int]:
    session = await spdy_client.open_exec(url, stdin=True, tty=True)
    assert session.stdin is not None and session.stdout is not None
    buf = bytearray()
    size = (0, 0)
    try:
        await session.resize_to(width, height)
        for _ in range(50):  # resize and newline travel separately: ask until the new size shows
            mark = len(buf)
            await session.stdin.write(b"\n")
            while (found := re.search(STTY_LINE, bytes(buf[mark:]))) is None:
                chunk = await asyncio.wait_for(session.stdout.read(), 30)
                assert chunk, bytes(buf)
                buf += chunk
            size = (int(found.group(1)), int(found.group(2))) if found.group(1) else (0, 0)
            if size == (height, width):
                break
        await session.stdin.write(b"q\n")
        await spdy_client.read_all(session.stdout)
        await session.status()
    finally:
        await session.client.close()
    return size


async def _forward(url: str, count: int) -> list[tuple[bytes, bytes]]:
    client = await spdy_client.connect(url, ["portforward.k8s.io"])
    try:
        return await asyncio.gather(*(
            spdy_client.forward_once(client, 8080, str(i), b"GET / HTTP/1.0\r\n\r\n") for i in range(count)))
    finally:
        await client.close()


def test_exec_and_port_forward_over_cri(daemon: DaemonProcess, registry: Registry, tmp_path: Path) -> None:
    ref = cri.push_busybox(registry)
    cri.pull(daemon.images(), ref)
    rs = daemon.runtime()
    sid = rs.RunPodSandbox(api_pb2.RunPodSandboxRequest(
        config=cri.sandbox_config(log_dir=tmp_path)), timeout=60).pod_sandbox_id
    try:
        cid = rs.CreateContainer(api_pb2.CreateContainerRequest(
            pod_sandbox_id=sid, config=cri.container_config(ref, SERVE, name="httpd")), timeout=60).container_id
        rs.StartContainer(api_pb2.StartContainerRequest(container_id=cid), timeout=60)

        # non-TTY: separate streams and the exit code, as client-go decodes it
        url = rs.Exec(api_pb2.ExecRequest(container_id=cid, cmd=["sh", "-c", "echo out; echo err >&2; exit 4"],
                                          stdout=True, stderr=True), timeout=10).url
        out, err, status = asyncio.run(spdy_client.run_exec(url))
        assert (out, err) == (b"out\n", b"err\n")
        assert status is not None and status["reason"] == "NonZeroExitCode"
        assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "4"}]

        # TTY: `stty size` follows a resize
        url = rs.Exec(api_pb2.ExecRequest(
            container_id=cid, cmd=["sh", "-c", 'while read l; do [ "$l" = q ] && exit 0; stty size; done'],
            tty=True, stdin=True, stdout=True), timeout=10).url
        assert asyncio.run(_tty_size_after_resize(url, 123, 45)) == (45, 123)

        # port-forward to the pod's own localhost:8080, several connections at once
        url = rs.PortForward(api_pb2.PortForwardRequest(pod_sandbox_id=sid, port=[8080]), timeout=10).url

        def url_once() -> str:
            return rs.PortForward(api_pb2.PortForwardRequest(pod_sandbox_id=sid, port=[8080]), timeout=10).url

        def answered() -> bool:
            return all(b"pod-page" in reply for reply, _ in asyncio.run(_forward(url_once(), 1)))

        cri.wait_for(answered, what="httpd in the pod answers through port-forward")
        results = asyncio.run(_forward(url, 6))
        assert all(reply.startswith(b"HTTP/1.") and reply.endswith(b"pod-page\n") and not e for reply, e in results)
    finally:
        rs.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=sid), timeout=60)
        rs.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=sid), timeout=60)
    exec_dir = daemon.state / "exec"
    assert not exec_dir.exists() or os.listdir(exec_dir) == []  # no exec fifos left behind


def test_attach_delivers_stdin_and_output(daemon: DaemonProcess, registry: Registry, tmp_path: Path) -> None:
    ref = cri.push_busybox(registry)
    cri.pull(daemon.images(), ref)
    rs = daemon.runtime()
    sid = rs.RunPodSandbox(api_pb2.RunPodSandboxRequest(
        config=cri.sandbox_config(log_dir=tmp_path, host_network=True)), timeout=60).pod_sandbox_id
    cid = rs.CreateContainer(api_pb2.CreateContainerRequest(pod_sandbox_id=sid, config=cri.container_config(
        ref, ["sh", "-c", "read line; echo got:$line; echo bye >&2; read rest; echo rest:$rest"],
        log_path="a.log", stdin=True, stdin_once=True)), timeout=60).container_id
    rs.StartContainer(api_pb2.StartContainerRequest(container_id=cid), timeout=60)
    url = rs.Attach(api_pb2.AttachRequest(container_id=cid, stdin=True, stdout=True, stderr=True), timeout=10).url
    out, err, _ = asyncio.run(spdy_client.run_exec(url, stdin_data=b"hello\n"))
    # stdin_once: closing the client's stdin closed the container's, so the second read saw EOF.
    assert out == b"got:hello\nrest:\n" and err == b"bye\n"
    cri.wait_for(lambda: cri.container_state(rs, cid).state == api_pb2.CONTAINER_EXITED, what="exit")
    rs.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=sid), timeout=60)
