"""Registry traffic: POST /images/create (pull; with fromSrc an import, see images_commit), POST /images/{name}/push,
GET /images/search.

Pull and push answer with Docker's JSON progress stream (``dockerapi.progress``):
what fails before the first message is an HTTP error, what fails later an
in-stream error the CLI prints.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from dockerapi import filters
from dockerapi.backends import ImageBackend
from dockerapi.handlers.auth import registry_auth
from dockerapi.handlers.images import images_of, publish
from dockerapi.handlers.images_commit import import_image
from dockerapi.params import query_opt_int
from dockerapi.progress import (
    JSONStream,
    Message,
    PullReporter,
    PushReporter,
    layer_status,
    run_reporting,
    short_id,
    status,
)
from pkg import errors
from pkg.images import reference
from pkg.images.model import Image, Progress, RegistryAuth

log = logging.getLogger(__name__)

SEARCH_LIMIT = 25


def pull_reference(from_image: str, tag: str) -> reference.Reference:
    """``fromImage`` plus ``tag`` (a tag or a digest) as one normalised reference; 400 when malformed."""
    text = from_image
    if tag:
        parsed = reference.parse(from_image, default_tag=False)
        if not parsed.tag and not parsed.digest:
            text = f"{from_image}@{tag}" if reference.is_digest(tag) else f"{from_image}:{tag}"
    return reference.parse(text)


def _pull_error(exc: BaseException, ref: reference.Reference) -> BaseException:
    """The registry's answer in Docker's words."""
    if isinstance(exc, errors.NotFound):
        return errors.NotFound(f"manifest for {ref.familiar()} not found: {exc.message}")
    if isinstance(exc, errors.Unauthenticated | errors.PermissionDenied):
        name = reference.Reference(ref.domain, ref.path).familiar()
        return errors.NotFound(f"pull access denied for {name}, repository does not exist or may require "
                               f"'docker login': {exc.message}")
    return exc


async def create(request: web.Request) -> web.StreamResponse:
    query = request.query
    from_image = query.get("fromImage", "")
    if not from_image:
        if "fromSrc" in query:
            return await import_image(request)
        raise errors.InvalidArgument("fromImage or fromSrc is required")
    tag = query.get("tag", "")
    platform = query.get("platform") or None
    images, auth = images_of(request), registry_auth(request)
    name = reference.parse(from_image.rstrip(":"), default_tag=False)
    if not tag and not name.tag and not name.digest:  # a bare name: every tag (docker pull -a)
        return await pull_all(request, images, name, auth, platform)
    return await pull(request, images, pull_reference(from_image, tag), auth, platform)


async def pull(request: web.Request, images: ImageBackend, ref: reference.Reference, auth: RegistryAuth | None,
               platform: str | None) -> web.StreamResponse:
    stream = JSONStream(request)
    try:
        fresh = await _pull_one(stream, images, ref, auth, platform)
    except Exception as exc:
        return await stream.fail(_pull_error(exc, ref))
    outcome = "Downloaded newer image for" if fresh else "Image is up to date for"
    await stream.send(status(f"Status: {outcome} {ref.familiar()}"))
    publish(request, "pull", ref.familiar(), name=ref.familiar())
    return await stream.finish()


async def pull_all(request: web.Request, images: ImageBackend, name: reference.Reference,
                   auth: RegistryAuth | None, platform: str | None) -> web.StreamResponse:
    """Every tag of the repository, one after the other; one final status for the repository."""
    try:
        tags = await images.list_tags(str(name), auth)
    except Exception as exc:
        raise _pull_error(exc, name) from None
    if not tags:
        raise errors.NotFound(f"repository {name.familiar()} has no tags")
    stream = JSONStream(request)
    fresh = False
    for tag in tags:
        ref = name.with_tag(tag)
        try:
            fresh = await _pull_one(stream, images, ref, auth, platform) or fresh
        except Exception as exc:
            return await stream.fail(_pull_error(exc, ref))
        publish(request, "pull", ref.familiar(), name=ref.familiar())
    outcome = "Downloaded newer image for" if fresh else "Image is up to date for"
    await stream.send(status(f"Status: {outcome} {name.familiar()}"))
    return await stream.finish()


async def _pull_one(stream: JSONStream, images: ImageBackend, ref: reference.Reference, auth: RegistryAuth | None,
                    platform: str | None) -> bool:
    """Pull one tag or digest with its progress and Digest line; True when the name now points at an image
    it did not point at before (moby's "Downloaded newer image")."""
    before = await images.record(str(ref))
    reporter = PullReporter()

    def translate(ev: Progress) -> list[Message]:
        if ev.status == "resolved":
            return [status(f"Pulling from {ref.path}", ref.tag or ref.digest)]
        return reporter.translate(ev)

    async def operation(sink: Callable[[Progress], None]) -> Image:
        return await images.pull(str(ref), auth, sink, platform=platform)

    async with images.keeping_displaced([str(ref)]):  # the image a moved tag leaves stays, dangling
        img = await run_reporting(stream, operation, translate)
    after = await images.record(str(ref))
    digest = ref.digest or (after.target.digest if after is not None else img.target.digest)
    await stream.send(status(f"Digest: {digest}"))
    return before is None or before.config_digest != img.id


async def push(request: web.Request) -> web.StreamResponse:
    images = images_of(request)
    name = request.match_info["name"]
    tag = request.query.get("tag", "")
    ref = reference.parse(f"{name}:{tag}" if tag else name, default_tag=False)
    repo = reference.Reference(ref.domain, ref.path)
    if ref.tag or ref.digest:
        targets = [ref]
    else:  # no tag: every local tag of the repository, as docker push does
        targets = sorted({reference.parse(t) for img in await images.list() for t in img.repo_tags
                          if reference.parse(t).name == ref.name}, key=str)
    if not targets:
        raise errors.NotFound(f"An image does not exist locally with the tag: {repo.familiar()}")
    local: list[tuple[reference.Reference, Image]] = []
    for target in targets:
        try:
            local.append((target, await images.get(str(target))))
        except errors.NotFound:
            raise errors.NotFound(f"An image does not exist locally with the tag: {target.familiar()}") from None

    auth = registry_auth(request)
    stream = JSONStream(request)
    await stream.send(status(f"The push refers to repository [{repo.name}]"))
    try:
        for target, img in local:
            detail = await images.detail(img)
            for layer in reversed(detail.layers):
                await stream.send(layer_status("Preparing", short_id(layer.digest)))
            reporter = PushReporter()

            async def operation(sink: Callable[[Progress], None], target: reference.Reference = target) -> str:
                return await images.push(str(target), auth, sink)

            digest = await run_reporting(stream, operation, reporter.translate)
            size = img.target.size if digest == img.target.digest else detail.manifest.size
            shown = target.tag or target.digest
            await stream.send(status(f"{shown}: digest: {digest} size: {size}"))
            await stream.send({"progressDetail": {}, "aux": {"Tag": shown, "Digest": digest, "Size": size}})
            publish(request, "push", target.familiar(), name=target.familiar())
    except Exception as exc:
        return await stream.fail(exc)
    return await stream.finish()


async def search(request: web.Request) -> web.Response:
    images = images_of(request)
    query = request.query
    limit = query_opt_int(request, "limit")
    if limit is None:
        limit = SEARCH_LIMIT
    wanted = filters.parse(query.get("filters"), ("is-official", "is-automated", "stars"))
    official = filters.bool_value(wanted, "is-official")
    automated = filters.bool_value(wanted, "is-automated")
    stars = 0
    for value in wanted.get("stars", []):
        try:
            stars = max(stars, int(value))
        except ValueError:
            raise errors.InvalidArgument(f"invalid filter 'stars={value}'") from None
    results = await images.search(query.get("term", ""), limit, registry_auth(request))
    out: list[dict[str, Any]] = []
    for r in results:
        if (official is not None and r.is_official != official) or \
                (automated is not None and r.is_automated != automated) or r.star_count < stars:
            continue
        out.append({"name": r.name, "description": r.description, "star_count": r.star_count,
                    "is_official": r.is_official, "is_automated": r.is_automated})
    return web.json_response(out)


async def distribution(request: web.Request) -> web.Response:
    """GET /distribution/{name}/json: what the registry serves for a name (docker manifest inspect's
    daemon side; docker-py inspect_distribution)."""
    images = images_of(request)
    ref = reference.parse(request.match_info["name"])
    try:
        info = await images.distribution(str(ref), registry_auth(request))
    except errors.NotFound as exc:
        raise _pull_error(exc, ref) from None
    except (errors.Unauthenticated, errors.PermissionDenied) as exc:
        raise errors.Unauthenticated(exc.message) from None
    platforms = []
    for os_name, arch, variant in info.platforms:
        entry = {"architecture": arch, "os": os_name}
        if variant:
            entry["variant"] = variant
        platforms.append(entry)
    desc = info.descriptor
    return web.json_response({"Descriptor": {"mediaType": desc.media_type, "digest": desc.digest,
                                             "size": desc.size}, "Platforms": platforms})


ROUTES = [
    ("POST", "/images/create", create),
    ("GET", "/images/search", search),
    ("POST", "/images/{name:.+}/push", push),
    ("GET", "/distribution/{name:.+}/json", distribution),
]
