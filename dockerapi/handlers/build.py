"""POST /build (docker build, the classic builder's protocol), /build/prune and /build/cancel.

The handler only reads the query and headers into ``BuildOptions`` and writes the builder's messages as JSON
lines; the build itself is pkg.docker.build.  Errors before the first message get an HTTP status (a Dockerfile
parse error is a 400 the CLI prints as "Error response from daemon"); later ones go into the stream as
``errorDetail`` (with ``code``, a failed RUN's exit status).
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from dockerapi import filters
from dockerapi.backend import backends, need
from dockerapi.handlers.auth import auth_from_json
from dockerapi.params import query_bool, query_int
from dockerapi.progress import JSONStream
from dockerapi.times import rfc3339
from pkg import errors
from pkg.docker.build.builder import Builder
from pkg.docker.build.model import BuildFailed, BuildOptions
from pkg.docker.engine.model import Resources, Ulimit
from pkg.images import media, reference
from pkg.images.model import RegistryAuth

log = logging.getLogger(__name__)

DISCONNECT_POLL = 1.0  # seconds between two looks at the client's connection during a build
PRUNE_FILTERS = {"until", "label", "label!", "type", "id", "parent", "description", "inuse", "shared", "private"}


def builder_of(request: web.Request) -> Builder:
    return need(backends(request).builder, "the builder")


def _json_param(request: web.Request, name: str, kind: type) -> Any:
    raw = request.query.get(name, "")
    if not raw:
        return kind()
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise errors.InvalidArgument(f"invalid {name} parameter: {exc}") from None
    if value is None:
        return kind()
    if not isinstance(value, kind):
        raise errors.InvalidArgument(f"invalid {name} parameter: expected a JSON {kind.__name__}")
    return value


def _registry_config(request: web.Request) -> dict[str, RegistryAuth]:
    header = request.headers.get("X-Registry-Config", "").strip()
    if not header:
        return {}
    try:
        doc = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    except (binascii.Error, ValueError):
        return {}  # as moby: undecodable credentials count as none
    if not isinstance(doc, dict):
        return {}
    return {str(k): auth_from_json(v) for k, v in doc.items() if isinstance(v, dict)}


def options(request: web.Request) -> BuildOptions:
    query = request.query
    version = query.get("version", "1") or "1"
    if version == "2":
        raise errors.InvalidArgument("BuildKit (version=2) is not supported by this daemon: it builds with the "
                                     "classic builder protocol (version=1); use DOCKER_BUILDKIT=0 or docker-py")
    if version != "1":
        raise errors.InvalidArgument(f"unsupported builder version {version!r}")
    if query_bool(request, "squash"):
        raise errors.InvalidArgument("squash is only supported with experimental mode")
    if query.get("remote"):
        raise errors.NotImplementedYet("remote build contexts (git URLs, URLs) are not supported yet: send the "
                                       "context as the request body")
    isolation = query.get("isolation", "")
    if isolation not in ("", "default"):
        raise errors.InvalidArgument(f"Unsupported isolation: {isolation!r}")
    tags = []
    for tag in query.getall("t", []):
        parsed = reference.parse(tag)
        if parsed.digest:
            raise errors.InvalidArgument(f"invalid tag {tag!r}: a tag cannot carry a digest")
        tags.append(str(parsed))
    platform = query.get("platform", "")
    if platform:
        media.parse_platform(platform)
    build_args = _json_param(request, "buildargs", dict)
    labels = _json_param(request, "labels", dict)
    ulimits = [Ulimit(str(u.get("Name", "")), int(u.get("Soft", 0)), int(u.get("Hard", 0)))
               for u in _json_param(request, "ulimits", list) if isinstance(u, dict)]
    hosts = [h for raw in query.getall("extrahosts", []) for h in raw.split(",") if h]
    resources = Resources(memory=query_int(request, "memory"), memory_swap=query_int(request, "memswap"),
                          cpu_shares=query_int(request, "cpushares"), cpu_period=query_int(request, "cpuperiod"),
                          cpu_quota=query_int(request, "cpuquota"), cpuset_cpus=query.get("cpusetcpus", ""))
    return BuildOptions(
        tags=tags, dockerfile=query.getall("dockerfile", [""])[0], target=query.get("target", ""),
        build_args={str(k): (None if v is None else str(v)) for k, v in build_args.items()},
        labels={str(k): str(v) for k, v in labels.items()},
        cache_from=[str(c) for c in _json_param(request, "cachefrom", list)],
        no_cache=query_bool(request, "nocache"), remove=query_bool(request, "rm", True),
        force_remove=query_bool(request, "forcerm"), pull=query_bool(request, "pull"),
        quiet=query_bool(request, "q"), platform=platform, network_mode=query.get("networkmode", ""),
        extra_hosts=hosts, shm_size=query_int(request, "shmsize"), resources=resources, ulimits=ulimits,
        security_opt=list(query.getall("securityopt", [])), auth=_registry_config(request))


async def _body(request: web.Request) -> AsyncIterator[bytes]:
    async for chunk in request.content.iter_chunked(1 << 20):
        yield chunk


async def _until_done_or_gone(request: web.Request, task: asyncio.Task[str]) -> str:
    """Wait for the build; cancel it when the client goes away (aiohttp does not cancel handlers itself), so a
    dropped ``docker build`` leaves no container, snapshot or lease behind."""
    while True:
        done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL)
        if done:
            if task.cancelled():  # POST /build/cancel
                raise BuildFailed("context canceled")
            return task.result()
        transport = request.transport
        if transport is None or transport.is_closing():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, errors.NarwhalError):
                await task
            raise errors.Cancelled("the client went away")


async def build(request: web.Request) -> web.StreamResponse:
    builder = builder_of(request)
    opts = options(request)
    stream = JSONStream(request)
    task = asyncio.ensure_future(builder.build(_body(request), opts, stream.send, request.query.get("buildid", "")))
    try:
        await _until_done_or_gone(request, task)
    except asyncio.CancelledError:
        task.cancel()
        raise
    except BuildFailed as exc:
        if not stream.started:
            raise
        detail: dict[str, Any] = {"message": exc.message}
        if exc.code:
            detail["code"] = exc.code
        await stream.send({"errorDetail": detail, "error": exc.message})
        return await stream.finish()
    except errors.NarwhalError as exc:
        return await stream.fail(exc)
    return await stream.finish()


async def cancel(request: web.Request) -> web.Response:
    build_id = request.query.get("id", "")
    if not build_id:
        raise errors.InvalidArgument("build ID not provided")
    if not builder_of(request).cancel(build_id):
        raise errors.NotFound(f"no build with ID {build_id}")
    return web.Response(status=200)


async def prune(request: web.Request) -> web.Response:
    builder = builder_of(request)
    wanted = filters.query(request, PRUNE_FILTERS)
    keep_storage = query_int(request, "keep-storage") or query_int(request, "reserved-space")
    prune_all = query_bool(request, "all")
    removed, reclaimed = await builder.prune(prune_all=prune_all, until=filters.until(wanted),
                                             keep_storage=keep_storage)
    return web.json_response({"CachesDeleted": removed or None, "SpaceReclaimed": reclaimed})


async def cache_records(request: web.Request) -> list[dict[str, Any]]:
    """The build cache as /system/df lists it (moby's BuildCache records)."""
    builder = backends(request).builder
    if builder is None:
        return []
    out = []
    for entry in await builder.usage():
        out.append({
            "ID": entry.image_id.removeprefix("sha256:"), "Parent": entry.parent.removeprefix("sha256:"),
            "Parents": [entry.parent.removeprefix("sha256:")] if entry.parent else [], "Type": "regular",
            "Description": entry.description, "InUse": False, "Shared": entry.shared, "Size": entry.size,
            "CreatedAt": rfc3339(entry.created_ns), "LastUsedAt": rfc3339(entry.used_ns),
            "UsageCount": 0,
        })
    return out


ROUTES = [
    ("POST", "/build", build),
    ("POST", "/build/prune", prune),
    ("POST", "/build/cancel", cancel),
]
