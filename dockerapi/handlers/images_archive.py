"""docker save and docker load: GET /images/{name}/get, GET /images/get?names=..., POST /images/load.

save streams one tarball that is both an OCI layout and a docker-archive
(what ``docker save`` writes since Docker 25); load accepts either, plus the
older docker-archive layout, and keeps the image IDs.
"""
from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from dockerapi.handlers import images_json as j
from dockerapi.handlers.archive import stream_tar
from dockerapi.handlers.images import images_of, publish
from dockerapi.progress import JSONStream
from pkg import errors

log = logging.getLogger(__name__)


async def save(request: web.Request) -> web.StreamResponse:
    images = images_of(request)
    names = [request.match_info["name"]] if "name" in request.match_info else request.query.getall("names", [])
    if not names:
        raise errors.InvalidArgument("no images given to save (names=...)")
    ids = []
    for name in names:  # unknown names are a 404 before the first byte, as in Docker
        try:
            ids.append((await images.get(name)).id)
        except errors.NotFound:
            raise j.no_such_image(name) from None
    chunks = await images.export(names)
    response = web.StreamResponse(status=200, headers={"Content-Type": "application/x-tar"})
    if await stream_tar(request, response, chunks, f"save {names}"):
        for image_id in dict.fromkeys(ids):
            publish(request, "save", image_id, name=image_id)
    return response


async def _body(request: web.Request) -> AsyncIterator[bytes]:
    async for chunk in request.content.iter_chunked(1 << 20):
        yield chunk


async def load(request: web.Request) -> web.StreamResponse:
    """POST /images/load: errors are reported in the stream (moby answers 200 and writes them there)."""
    images = images_of(request)
    stream = JSONStream(request)
    try:
        loaded = await images.load(_body(request))
    except Exception as exc:
        await stream.start()
        return await stream.fail(exc)
    for img, names in loaded:
        tagged = [j.familiar(n) for n in names if "@" not in n]
        for name in tagged:
            await stream.send({"stream": f"Loaded image: {name}\n"})
        if not tagged:
            await stream.send({"stream": f"Loaded image ID: {img.id}\n"})
        publish(request, "load", img.id, name=img.id)
    return await stream.finish()


ROUTES = [
    ("GET", "/images/get", save),
    ("POST", "/images/load", load),
    ("GET", "/images/{name:.+}/get", save),
]
