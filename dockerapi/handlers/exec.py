"""Exec: POST /containers/{id}/exec, POST /exec/{id}/start (hijacked), GET /exec/{id}/json, POST /exec/{id}/resize."""
from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from typing import Any

from aiohttp import web

from dockerapi import hijack
from dockerapi.backend import backends, need
from dockerapi.handlers.attach import lookup
from dockerapi.params import json_object, query_int, string_list
from pkg import errors
from pkg.docker.views.exec import ExecConfig, ExecInstance, ExecManager
from pkg.streaming.backend import ExecStreams


def _execs(request: web.Request, pod: bool = False) -> ExecManager:
    """The exec manager of the container's domain (kubelet's containers have their own: docker-shows-pods)."""
    if pod:
        return need(backends(request).pod_execs, "exec in kubelet's containers")
    return need(backends(request).execs, "exec")


def _owner(request: web.Request, exec_id: str) -> ExecManager:
    """The manager that knows ``exec_id``: the Docker domain's, else the pods' (its NotFound otherwise)."""
    manager = _execs(request)
    pod_execs = backends(request).pod_execs
    if pod_execs is None:
        return manager
    try:
        manager.get(exec_id)
        return manager
    except errors.NotFound:
        return pod_execs


def _console_size(body: dict[str, Any]) -> tuple[int, int] | None:
    size = body.get("ConsoleSize")
    if size is None:
        return None
    if (not isinstance(size, list) or len(size) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in size)):
        raise errors.InvalidArgument("ConsoleSize must be [height, width]")
    return size[0], size[1]


async def create(request: web.Request) -> web.Response:
    body = await json_object(request)
    found = lookup(request, request.match_info["id"])
    if found.paused:
        raise errors.Conflict(f"Container {found.id} is paused, unpause the container before exec")
    if found.restarting:
        raise errors.Conflict(f"Container {found.id} is restarting, wait until the container is running")
    # Go decodes JSON field names case-insensitively, and docker-py sends "detachKeys".
    detach_keys = str(body.get("DetachKeys") or body.get("detachKeys") or "")
    if detach_keys:
        hijack.parse_detach_keys(detach_keys)
    config = ExecConfig(
        cmd=string_list(body.get("Cmd"), "Cmd"), env=string_list(body.get("Env"), "Env"),
        working_dir=str(body.get("WorkingDir") or ""),
        user=str(body.get("User") or ""), tty=bool(body.get("Tty")), attach_stdin=bool(body.get("AttachStdin")),
        attach_stdout=bool(body.get("AttachStdout")), attach_stderr=bool(body.get("AttachStderr")),
        privileged=bool(body.get("Privileged")), detach_keys=detach_keys, console_size=_console_size(body),
    )
    instance = _execs(request, found.pod).create(found.id, config)
    return web.json_response({"Id": instance.id}, status=201)


async def start(request: web.Request) -> web.StreamResponse:
    body = await json_object(request)
    manager = _owner(request, request.match_info["id"])
    instance = manager.claim(request.match_info["id"])
    console = _console_size(body)
    if console is not None and instance.config.tty:
        instance.config = replace(instance.config, console_size=console)
    if body.get("Detach"):
        await manager.run_detached(instance)
        return web.Response(status=200)
    # moby frames by the start request's Tty, not the exec's: a tty exec started with Tty false (docker-py's
    # default) gets its terminal output in stdout frames.
    raw = bool(body.get("Tty"))

    async def session(conn: hijack.HijackedConnection) -> None:
        await _session(manager, instance, conn, raw)

    try:
        return await hijack.serve(request, tty=raw, session=session)
    finally:
        manager.unclaim(instance)  # a start that never happened (the client went away first) may be retried


class _Detachable(hijack.OutputStream):
    """Output that stops reaching the client once it detached (the process keeps running, drained)."""

    def __init__(self, conn: hijack.HijackedConnection, stream: int, raw: bool, stdin: hijack.InputStream | None):
        super().__init__(conn, stream, raw)
        self._stdin = stdin

    async def write(self, data: bytes) -> None:
        if self._stdin is not None and self._stdin.detached:
            raise ConnectionResetError("detached")
        await super().write(data)


async def _session(manager: ExecManager, instance: ExecInstance, conn: hijack.HijackedConnection, raw: bool) -> None:
    config = instance.config
    stdin = None
    if config.attach_stdin:
        keys = hijack.parse_detach_keys(config.detach_keys) if config.tty else b""
        stdin = hijack.InputStream(conn, keys)
    streams = ExecStreams(
        tty=config.tty, stdin=stdin,
        stdout=_Detachable(conn, hijack.STDOUT, raw, stdin) if config.attach_stdout else None,
        stderr=_Detachable(conn, hijack.STDERR, raw, stdin) if config.attach_stderr and not config.tty else None,
    )
    task, outcome = manager.spawn(instance, streams)
    waiters: list[asyncio.Future[Any]] = [task, asyncio.ensure_future(conn.lost.wait())]
    if stdin is not None:
        waiters.append(asyncio.ensure_future(stdin.detach.wait()))
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        if stdin is not None and stdin.detached:
            return  # the process goes on; its output is drained
        if conn.lost.is_set() and not task.done():
            task.cancel()  # the client went away: kill the process (run_exec does on cancel)
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return
    finally:
        for waiter in waiters[1:]:
            waiter.cancel()
    if outcome:
        raise outcome[0]  # the start failed: hijack.serve writes it on the stream, as moby does


async def inspect(request: web.Request) -> web.Response:
    instance = _owner(request, request.match_info["id"]).get(request.match_info["id"])
    config = instance.config
    return web.json_response({
        "ID": instance.id,
        "Running": instance.running,
        "ExitCode": instance.exit_code,
        "ProcessConfig": {
            "tty": config.tty, "entrypoint": config.cmd[0], "arguments": list(config.cmd[1:]),
            "privileged": config.privileged, "user": config.user,
        },
        "OpenStdin": config.attach_stdin,
        "OpenStderr": config.attach_stderr,
        "OpenStdout": config.attach_stdout,
        "CanRemove": False,
        "ContainerID": instance.container_id,
        "DetachKeys": config.detach_keys,
        "Pid": instance.pid,
    })


async def resize(request: web.Request) -> web.Response:
    height, width = query_int(request, "h"), query_int(request, "w")
    await _owner(request, request.match_info["id"]).resize(request.match_info["id"], height, width)
    return web.Response(status=200)


ROUTES = [
    ("POST", "/containers/{id}/exec", create),
    ("POST", "/exec/{id}/start", start),
    ("GET", "/exec/{id}/json", inspect),
    ("POST", "/exec/{id}/resize", resize),
]
