"""GET /system/df: what images, containers, volumes and the build cache hold on disk (``docker system df``)."""
from __future__ import annotations

from typing import Any

from aiohttp import web

from dockerapi.backend import Backends, backends
from dockerapi.handlers import build, containers_json, images_json
from pkg import errors
from pkg.docker.engine.model import EngineContainer
from pkg.images.model import Image
from pkg.runtime.containers import ContainerService
from pkg.system import writable_layer_sizes

TYPES = ("container", "image", "volume", "build-cache")


async def system_df(request: web.Request) -> web.Response:
    wanted = request.query.getall("type", [])
    for kind in wanted:
        if kind not in TYPES:
            raise errors.InvalidArgument(f"unknown object type: {kind}")
    want = set(wanted or TYPES)
    b = backends(request)
    containers = await _containers(b) if want & {"container", "image"} else []
    body: dict[str, Any] = {}
    if "image" in want:
        images = await b.images.list() if b.images is not None else []
        body["LayersSize"] = await _layers_size(b, containers)
        body["Images"] = await _images(request, b, images, containers)
    if "container" in want:
        body["Containers"] = containers
    if "volume" in want:
        body["Volumes"] = await _volumes(b)
    if "build-cache" in want:
        body["BuildCache"] = await build.cache_records(request)
    return web.json_response(body)


async def _containers(b: Backends) -> list[dict[str, Any]]:
    """ps entries plus SizeRw: the bytes in each container's writable layer.  With docker-shows-pods,
    kubelet's containers too (each counted once, from the CRI domain), as dockershim's df counted them."""
    if b.engine is None or b.containers is None:
        return []
    result = await _sized(b.containers, b.engine.list())
    if b.pods is not None:
        result += await _sized(b.pods.containers, b.pods.list())
    return result


async def _sized(core: ContainerService, shown: list[EngineContainer]) -> list[dict[str, Any]]:
    metadata = {meta.id: meta for meta, _ in core.list()}
    sizes = await writable_layer_sizes(core, [metadata[c.id] for c in shown if c.id in metadata])
    result = []
    for c in shown:
        entry = containers_json.summary_json(c)
        entry["SizeRw"] = sizes.get(c.id, 0)
        entry["SizeRootFs"] = 0  # moby computes it only for ps --size; df leaves it out too
        result.append(entry)
    return result


async def _layers_size(b: Backends, containers: list[dict[str, Any]]) -> int:
    """Bytes of the snapshotter's store that are image layers (containers' writable layers taken out)."""
    assert b.images is not None
    usage = await b.images.fs_info()
    snapshots = usage[0].used_bytes if usage else 0
    return max(0, snapshots - sum(int(c.get("SizeRw") or 0) for c in containers))


async def _images(request: web.Request, b: Backends, images: list[Image],
                  containers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Image summaries with how many containers use each and whether any layer is shared (SharedSize -1:
    shared but not measured, 0: no layer in common with another image)."""
    assert b.images is not None
    users: dict[str, int] = {}
    for c in containers:
        users[c["ImageID"]] = users.get(c["ImageID"], 0) + 1
    layer_owners: dict[str, int] = {}
    for img in images:
        for diff_id in set(img.diff_ids):
            layer_owners[diff_id] = layer_owners.get(diff_id, 0) + 1
    result = []
    for img in images:
        try:
            size = await b.images.unpacked_size(img)
        except errors.NarwhalError:  # content gone under it (being removed): what the registry said
            size = img.size
        entry = images_json.summary(request, img, size)
        entry["Containers"] = users.get(img.id, 0)
        entry["SharedSize"] = -1 if any(layer_owners.get(d, 0) > 1 for d in img.diff_ids) else 0
        result.append(entry)
    return result


async def _volumes(b: Backends) -> list[dict[str, Any]]:
    if b.volumes is None:
        return []
    usage = await b.volumes.usage()
    result = []
    for vol in b.volumes.list():
        use = usage.get(vol.name)
        result.append({
            "Name": vol.name, "Driver": vol.driver, "Mountpoint": vol.mountpoint, "CreatedAt": vol.created_at,
            "Labels": dict(vol.labels), "Scope": vol.scope, "Options": dict(vol.options),
            "UsageData": {"Size": use.size if use else -1, "RefCount": use.ref_count if use else 0},
        })
    return result
