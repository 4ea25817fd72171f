"""POST /commit: a container's filesystem changes and config as a new image (docker commit); and
docker import (POST /images/create?fromSrc=...): a filesystem tarball as a new image.

The new image's config is the container's (as Docker stores it: the image's
config merged with the run options), then the body's Config, then each
``changes`` line, a Dockerfile instruction (CMD, ENTRYPOINT, ENV, LABEL,
EXPOSE, WORKDIR, USER, VOLUME, STOPSIGNAL), as moby applies them.  The
container is paused while its snapshot is diffed unless ``pause=0``.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import shlex
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
from aiohttp import web

from dockerapi import params
from dockerapi.backend import Backends, backends, need
from dockerapi.backends import CommitRequest
from dockerapi.handlers.images import get_image, images_of, publish
from dockerapi.handlers.pods import pod_container
from dockerapi.progress import JSONStream
from pkg import errors
from pkg.images import reference
from pkg.images.model import ImageConfig

log = logging.getLogger(__name__)

SUPPORTED = ("CMD", "ENTRYPOINT", "ENV", "LABEL", "EXPOSE", "WORKDIR", "USER", "VOLUME", "STOPSIGNAL")


def _json_or_shell(rest: str, shell_form: bool) -> list[str]:
    """A JSON array as is; otherwise the shell form (``/bin/sh -c``) or, for VOLUME, words."""
    text = rest.strip()
    if text.startswith("["):
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
    if shell_form:
        return ["/bin/sh", "-c", text]
    return text.split()


def _pairs(rest: str, what: str) -> list[tuple[str, str]]:
    """``k=v k2="v 2"`` (or the legacy ``k v`` form with a single pair)."""
    try:
        words = shlex.split(rest)
    except ValueError as exc:
        raise errors.InvalidArgument(f"{what}: {exc}") from None
    if not words:
        raise errors.InvalidArgument(f"{what} requires at least one argument")
    if "=" not in words[0]:
        key, _, value = rest.strip().partition(" ")
        return [(key, value.strip())]
    out = []
    for word in words:
        key, eq, value = word.partition("=")
        if not eq or not key:
            raise errors.InvalidArgument(f"{what} names can not be blank and need a value: {word!r}")
        out.append((key, value))
    return out


def apply_changes(cfg: ImageConfig, changes: list[str]) -> ImageConfig:
    """Apply Dockerfile instructions to ``cfg`` (moby's dockerfile.BuildFromConfig, for the commit subset)."""
    for line in changes:
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        word, _, rest = text.partition(" ")
        op = word.upper()
        if op not in SUPPORTED:
            raise errors.InvalidArgument(f"{word} is not a valid change command")
        rest = rest.strip()
        if not rest:
            raise errors.InvalidArgument(f"{op} requires at least one argument")
        if op == "CMD":
            cfg = dataclasses.replace(cfg, cmd=_json_or_shell(rest, True))
        elif op == "ENTRYPOINT":
            cfg = dataclasses.replace(cfg, entrypoint=_json_or_shell(rest, True), cmd=[])
        elif op == "ENV":
            env = list(cfg.env)
            for key, value in _pairs(rest, "ENV"):
                env = [e for e in env if e.partition("=")[0] != key] + [f"{key}={value}"]
            cfg = dataclasses.replace(cfg, env=env)
        elif op == "LABEL":
            cfg = dataclasses.replace(cfg, labels={**cfg.labels, **dict(_pairs(rest, "LABEL"))})
        elif op == "EXPOSE":
            ports = [p if "/" in p else f"{p}/tcp" for p in rest.split()]
            cfg = dataclasses.replace(cfg, exposed_ports=sorted({*cfg.exposed_ports, *ports}))
        elif op == "VOLUME":
            cfg = dataclasses.replace(cfg, volumes=sorted({*cfg.volumes, *_json_or_shell(rest, False)}))
        elif op == "WORKDIR":
            cfg = dataclasses.replace(cfg, working_dir=rest)
        elif op == "USER":
            cfg = dataclasses.replace(cfg, user=rest)
        else:  # STOPSIGNAL
            cfg = dataclasses.replace(cfg, stop_signal=rest)
    return cfg


def apply_body(cfg: ImageConfig, body: dict[str, Any]) -> ImageConfig:
    """The request body's Config fields (docker-py's ``conf``), over the container's."""
    def strings(key: str) -> list[str] | None:
        value = body.get(key)
        if value is None:
            return None
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
        raise errors.InvalidArgument(f"Config.{key}: expected a list of strings")

    def mapping_keys(key: str) -> list[str] | None:
        value = body.get(key)
        return sorted(str(k) for k in value) if isinstance(value, dict) else None

    updates: dict[str, Any] = {}
    for key, field in (("Cmd", "cmd"), ("Entrypoint", "entrypoint"), ("Env", "env")):
        if (value := strings(key)) is not None:
            updates[field] = value
    for key, field in (("WorkingDir", "working_dir"), ("User", "user"), ("StopSignal", "stop_signal")):
        if isinstance(body.get(key), str) and body[key]:
            updates[field] = body[key]
    if isinstance(body.get("Labels"), dict):
        updates["labels"] = {**cfg.labels, **{str(k): str(v) for k, v in body["Labels"].items()}}
    for key, field in (("ExposedPorts", "exposed_ports"), ("Volumes", "volumes")):
        if (keys := mapping_keys(key)) is not None:
            updates[field] = keys
    return dataclasses.replace(cfg, **updates)


async def _container(b: Backends, ref: str) -> tuple[str, str, ImageConfig | None, bool]:
    """(container ID, image ID, its Docker config, running?)."""
    io = need(b.io, "containers")
    found = need(b.engine, "the container engine").get(ref)  # Docker's "No such container" when unknown
    spec = found.config
    cfg = ImageConfig(entrypoint=list(spec.entrypoint), cmd=list(spec.cmd), env=list(spec.env),
                      working_dir=spec.working_dir, user=spec.user, labels=dict(spec.labels),
                      exposed_ports=list(spec.exposed_ports), volumes=list(spec.volumes),
                      stop_signal=spec.stop_signal)
    container_id = str(found.id)
    return container_id, io.image_of(container_id), cfg, io.running(container_id)


def _target_names(query: Mapping[str, str], verb: str) -> tuple[str, ...]:
    """The new image's name from ``repo`` and ``tag`` (none without ``repo``); never a digest."""
    repo, tag = query.get("repo", ""), query.get("tag", "")
    if not repo:
        return ()
    parsed = reference.parse(f"{repo}:{tag}" if tag else repo)
    if parsed.digest:
        raise errors.InvalidArgument(f"cannot {verb} to a digest reference")
    return (str(parsed),)


async def commit(request: web.Request) -> web.Response:
    b = backends(request)
    images = images_of(request)
    query = request.query
    ref = query.get("container", "")
    if not ref:
        raise errors.InvalidArgument("container is required")
    if query.get("tag") and not query.get("repo"):
        raise errors.InvalidArgument("tag is not allowed without a repository")
    names = _target_names(query, "commit")
    body: dict[str, Any] = {}
    if request.can_read_body:
        raw = await request.read()
        if raw.strip() and raw.strip() != b"null":
            try:
                doc = params.loads(raw)
            except ValueError as exc:
                raise errors.InvalidArgument(f"invalid container config: {exc}") from None
            if not isinstance(doc, dict):
                raise errors.InvalidArgument("invalid container config: expected a JSON object")
            body = doc

    pod_id = pod_container(request, ref)
    if pod_id is not None:
        need(b.pods, "pods").guard(pod_id, "commit")  # kubelet's container: always refused
    container_id, image_id, cfg, running = await _container(b, ref)
    parent = await get_image(images, image_id)
    if cfg is None:
        cfg = parent.config
    created_by = " ".join(cfg.cmd)  # moby: the history step shows the container's command
    cfg = apply_changes(apply_body(cfg, body), query.getall("changes", []))
    pause = query.get("pause", "1").strip().lower() not in ("0", "false", "no")
    engine = b.engine
    paused = False
    if pause and running and engine is not None:
        try:
            await engine.pause(container_id)
            paused = True
        except errors.NarwhalError as exc:
            # Typically it exited between our look and the pause (its exit not recorded yet): nothing
            # runs that could change the filesystem, so the snapshot is diffed as it is.
            log.info("commit: container %s not paused: %s", container_id, exc.message)
    try:
        async with images.keeping_displaced(list(names)):
            img = await images.commit(CommitRequest(
                snapshot_key=container_id, parent=parent, config=cfg, author=query.get("author", ""),
                comment=query.get("comment", ""), created_by=created_by, names=names))
    finally:
        if paused and engine is not None:
            try:
                await engine.unpause(container_id)
            except errors.NarwhalError as exc:
                log.warning("commit: could not unpause %s: %s", container_id, exc.message)
    if b.events is not None:  # moby reports a commit as a container event
        b.events.publish_docker("container", "commit", container_id, {
            "comment": query.get("comment", ""), "imageID": img.id,
            "imageRef": reference.parse(names[0]).familiar() if names else ""})
    return web.json_response({"Id": img.id}, status=201)


async def _body_chunks(request: web.Request) -> AsyncIterator[bytes]:
    async for chunk in request.content.iter_chunked(1 << 20):
        yield chunk


async def _url_chunks(url: str) -> AsyncIterator[bytes]:
    timeout = aiohttp.ClientTimeout(total=None, connect=10, sock_read=60)
    try:
        async with aiohttp.ClientSession(timeout=timeout, trust_env=False) as session, session.get(url) as resp:
            if resp.status != 200:
                raise errors.NotFound(f'Get "{url}": HTTP {resp.status}')
            async for chunk in resp.content.iter_chunked(1 << 20):
                yield chunk
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise errors.Unavailable(f'Get "{url}": {exc or type(exc).__name__}') from None


async def import_image(request: web.Request) -> web.StreamResponse:
    """fromSrc=- (the body) or an http(s) URL; repo/tag name it, message and changes shape its config."""
    images = images_of(request)
    query = request.query
    src = query.get("fromSrc", "")
    names = _target_names(query, "import")
    if src == "-":
        chunks = _body_chunks(request)
    elif src.startswith(("http://", "https://")):
        chunks = _url_chunks(src)
    else:
        raise errors.InvalidArgument(f"fromSrc must be - (the request body) or an http(s) URL, not {src!r}")
    config = apply_changes(ImageConfig(), query.getall("changes", []))
    message = query.get("message", "") or f"Imported from {src}"
    stream = JSONStream(request)
    async with images.keeping_displaced(list(names)):
        img = await images.import_rootfs(chunks, config=config, message=message, names=names,
                                         platform=query.get("platform") or None)
    await stream.send({"status": img.id})
    publish(request, "import", img.id, name=img.id)
    return await stream.finish()


ROUTES = [
    ("POST", "/commit", commit),
]
