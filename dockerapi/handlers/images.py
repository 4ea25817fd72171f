"""Local images: list, inspect, history, tag, remove, prune (moby's image router, local half).

Registry traffic (pull, push, search) is in ``images_registry``; archives
(save, load) in ``images_archive``; commit in ``images_commit``.
"""
from __future__ import annotations

import logging
import time
from typing import Any

from aiohttp import web

from dockerapi import filters, times, versions
from dockerapi.backend import backends, need
from dockerapi.backends import DeleteItem, ImageBackend, ImageDetail, ImageRemovalBackend, chain_ids
from dockerapi.handlers import images_json as j
from dockerapi.params import query_bool
from pkg import errors
from pkg.images import reference
from pkg.images.model import Image

log = logging.getLogger(__name__)

LIST_FILTERS = ("dangling", "label", "reference", "before", "since", "until")
PRUNE_FILTERS = ("dangling", "until", "label", "label!")
MAX_PARENTS = 128


def images_of(request: web.Request) -> ImageBackend:
    return need(backends(request).images, "images")


def removal(request: web.Request) -> ImageRemovalBackend:
    """docker rmi's rules, which know the containers using each image (of both faces with
    docker-images-for-pods: the image is one for both)."""
    return need(backends(request).image_removal, "image removal")


async def get_image(images: ImageBackend, ref: str) -> Image:
    """The image ``ref`` names, or Docker's "No such image" (404); a malformed name is a 400."""
    try:
        return await images.get(ref)
    except errors.NotFound:
        raise j.no_such_image(ref) from None


def publish(request: web.Request, action: str, actor: str, **attributes: str) -> None:
    """An image event on the daemon's bus (``docker events``), when the daemon has one."""
    bus = backends(request).events
    if bus is not None:
        bus.publish_docker("image", action, actor, attributes)


def delete_json(items: list[DeleteItem]) -> list[dict[str, str]]:
    return [{"Untagged": i.untagged} if i.untagged else {"Deleted": i.deleted} for i in items]


# ---- handlers ----
async def list_images(request: web.Request) -> web.Response:
    images = images_of(request)
    wanted = filters.query(request, LIST_FILTERS)
    legacy = request.query.get("filter", "")
    if legacy and not versions.at_least(request, "1.41"):
        wanted.setdefault("reference", []).append(legacy)
    selected = await _select(images, await images.list(), wanted)
    out = [j.summary(request, img, await images.unpacked_size(img), wanted.get("reference"))
           for img in selected]
    out.sort(key=lambda s: s["Created"], reverse=True)
    return web.json_response(out)


async def _select(images: ImageBackend, candidates: list[Image], wanted: filters.Filters) -> list[Image]:
    dangling = filters.bool_value(wanted, "dangling")
    before = [times.unix((await get_image(images, ref)).created) for ref in wanted.get("before", [])]
    since = [times.unix((await get_image(images, ref)).created) for ref in wanted.get("since", [])]
    now = time.time_ns()
    until = [times.timestamp(v, now) / 1e9 for v in wanted.get("until", [])]
    out = []
    for img in candidates:
        created = times.unix(img.created)
        if dangling is not None and dangling != (not img.repo_tags):
            continue
        if not filters.labels_selected(wanted, img.config.labels):
            continue
        if wanted.get("reference") and not j.reference_matches(img, wanted["reference"]):
            continue
        if any(created >= b for b in before) or any(created <= s for s in since):
            continue
        if any(created >= u for u in until):
            continue
        out.append(img)
    return out


async def inspect_image(request: web.Request) -> web.Response:
    images = images_of(request)
    img = await get_image(images, request.match_info["name"])
    return web.json_response(j.inspect(request, await images.detail(img)))


async def image_history(request: web.Request) -> web.Response:
    images = images_of(request)
    img = await get_image(images, request.match_info["name"])
    detail = await images.detail(img)
    parents: list[ImageDetail] = []
    parent_id = detail.parent
    while parent_id and len(parents) < MAX_PARENTS:  # commits on commits: the local part of the chain
        try:
            parent = await images.detail(await images.get(parent_id))
        except errors.NotFound:
            break
        parents.append(parent)
        parent_id = parent.parent
    return web.json_response(j.history(detail, parents))


async def tag_image(request: web.Request) -> web.Response:
    images = images_of(request)
    name = request.match_info["name"]
    repo, tag = request.query.get("repo", ""), request.query.get("tag", "")
    if not repo:
        raise errors.InvalidArgument("repository name must have at least one component")
    target = f"{repo}:{tag}" if tag else repo
    try:
        parsed = reference.parse(target)
    except errors.InvalidArgument:
        raise errors.InvalidArgument(
            f'Error parsing reference: "{target}" is not a valid repository/tag: invalid reference format') from None
    if parsed.digest:
        raise errors.InvalidArgument("refusing to create a tag with a digest reference")
    img = await get_image(images, name)
    async with images.keeping_displaced([str(parsed)]):  # the image the tag leaves stays, dangling
        await images.tag(img.id, str(parsed))
    publish(request, "tag", img.id, name=parsed.familiar())
    return web.Response(status=201)


async def delete(request: web.Request) -> web.Response:
    images = images_of(request)
    name = request.match_info["name"]
    if not name.strip():
        raise errors.InvalidArgument("image name cannot be blank")
    force = query_bool(request, "force")
    prune = not query_bool(request, "noprune")
    image_id = (await get_image(images, name)).id
    try:
        rules = removal(request)
        items = await rules.delete(name, rules.users(), force=force, prune=prune)
    except errors.NotFound:
        raise j.no_such_image(name) from None
    for item in items:  # as moby: both name the image by its ID
        publish(request, "untag" if item.untagged else "delete", image_id, name=image_id)
    return web.json_response(delete_json(items))


async def prune(request: web.Request) -> web.Response:
    """POST /images/prune: unused images (dangling only unless ``dangling=false``) that no container uses."""
    images = images_of(request)
    wanted = filters.query(request, PRUNE_FILTERS)
    dangling = filters.bool_value(wanted, "dangling")
    only_dangling = dangling is None or dangling
    rules = removal(request)
    users = rules.users()
    used = {u.image_id for u in users}
    candidates = [img for img in await images.list() if img.id not in used]
    if only_dangling:
        candidates = [img for img in candidates if not img.repo_tags]
    selected = await _select(images, candidates, {k: v for k, v in wanted.items() if k != "dangling"})
    deleted: list[dict[str, str]] = []
    reclaimed = 0
    layers: dict[str, int] = {}  # chain ID -> bytes on disk, of the layers of the images deleted
    for img in selected:
        try:
            detail = await images.detail(img)
        except errors.NotFound:
            continue
        try:
            items = await rules.delete(img.id, users, force=True)
        except (errors.NotFound, errors.Conflict) as exc:
            log.info("prune: keeping %s: %s", img.id, exc)
            continue
        reclaimed += detail.manifest.size
        layers.update(_layer_bytes(detail))
        deleted += delete_json(items)
        publish(request, "delete", img.id, name=img.id)
    if layers:  # a layer another image still has is not reclaimed (moby counts only what is really gone)
        kept = {chain for img in await images.list() for chain in chain_ids(img.diff_ids)}
        reclaimed += sum(size for chain, size in layers.items() if chain not in kept)
    body: dict[str, Any] = {"ImagesDeleted": deleted or None, "SpaceReclaimed": reclaimed}
    return web.json_response(body)


def _layer_bytes(detail: ImageDetail) -> dict[str, int]:
    """Each layer's bytes on disk by chain ID: its unpacked size, or its blob's when it was never unpacked."""
    diff_ids = detail.image.diff_ids
    unpacked = [e.size for e in detail.history if not e.empty_layer]
    out = {}
    for i, chain in enumerate(chain_ids(diff_ids)):
        size = unpacked[i] if i < len(unpacked) else 0
        if not size and i < len(detail.layers):
            size = detail.layers[i].size
        out[chain] = size
    return out


ROUTES = [
    ("GET", "/images/json", list_images),
    ("POST", "/images/prune", prune),
    ("GET", "/images/{name:.+}/json", inspect_image),
    ("GET", "/images/{name:.+}/history", image_history),
    ("POST", "/images/{name:.+}/tag", tag_image),
    ("DELETE", "/images/{name:.+}", delete),
]
