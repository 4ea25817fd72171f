"""/volumes: create, inspect, list, remove, prune; plus the Mounts JSON helpers the container handlers use.

``mount_spec(obj)`` turns a ``HostConfig.Mounts`` entry into a pkg
``MountSpec`` (``pkg.docker.volumes.binds.parse_bind`` does the same for ``Binds``
strings) and ``mount_point_json(mp)`` renders a resolved mount as the
``Mounts`` entry of ``GET /containers/{id}/json``.
"""
from __future__ import annotations

from typing import Any

from aiohttp import web

from dockerapi import filters, params, versions
from dockerapi.backend import backends, need
from pkg import errors
from pkg.docker.volumes.model import MountPoint, MountSpec, MountType, Volume, VolumeFilter, VolumeUsage
from pkg.docker.volumes.service import VolumeService

_LIST_FILTERS = ("dangling", "driver", "label", "name")
_PRUNE_FILTERS = ("label", "label!", "all")


def _service(request: web.Request) -> VolumeService:
    return need(backends(request).volumes, "volumes")


def volume_json(v: Volume, usage: VolumeUsage | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "CreatedAt": v.created_at,
        "Driver": v.driver,
        "Labels": dict(v.labels),
        "Mountpoint": v.mountpoint,
        "Name": v.name,
        "Options": dict(v.options) or None,
        "Scope": v.scope,
    }
    if usage is not None:
        body["UsageData"] = {"Size": usage.size, "RefCount": usage.ref_count}
    return body


def mount_point_json(mp: MountPoint) -> dict[str, Any]:
    """One entry of a container's inspect ``Mounts``."""
    body: dict[str, Any] = {"Type": mp.type.value}
    if mp.type is MountType.VOLUME:
        body["Name"] = mp.name
    body.update(Source=mp.source, Destination=mp.destination)
    if mp.type is MountType.VOLUME:
        body["Driver"] = mp.driver
    body.update(Mode=mp.mode, RW=mp.rw, Propagation=mp.propagation)
    return body


def mount_spec(obj: Any) -> MountSpec:
    """A ``HostConfig.Mounts`` entry (``docker run --mount``) as a pkg mount request."""
    if not isinstance(obj, dict):
        raise errors.InvalidArgument("invalid mount config: expected an object")
    kind = str(obj.get("Type") or "")
    try:
        mount_type = MountType(kind)
    except ValueError:
        raise errors.InvalidArgument(f'invalid mount config for type "{kind}": mount type unknown') from None
    bind_opts = params.mapping(obj.get("BindOptions"), "invalid mount config: BindOptions")
    volume_opts = params.mapping(obj.get("VolumeOptions"), "invalid mount config: VolumeOptions")
    tmpfs_opts = params.mapping(obj.get("TmpfsOptions"), "invalid mount config: TmpfsOptions")
    if bind_opts and mount_type is not MountType.BIND:
        raise errors.InvalidArgument(f'invalid mount config for type "{kind}": field BindOptions must not be specified')
    if volume_opts and mount_type is not MountType.VOLUME:
        raise errors.InvalidArgument(
            f'invalid mount config for type "{kind}": field VolumeOptions must not be specified')
    if tmpfs_opts and mount_type is not MountType.TMPFS:
        raise errors.InvalidArgument(
            f'invalid mount config for type "{kind}": field TmpfsOptions must not be specified')
    driver = params.mapping(volume_opts.get("DriverConfig"), "invalid mount config: DriverConfig")
    return MountSpec(
        type=mount_type,
        target=str(obj.get("Target") or ""),
        source=str(obj.get("Source") or ""),
        read_only=bool(obj.get("ReadOnly")),
        propagation=str(bind_opts.get("Propagation") or ""),
        no_copy=bool(volume_opts.get("NoCopy")),
        create_host_path=bool(bind_opts.get("CreateMountpoint")),
        volume_driver=str(driver.get("Name") or ""),
        volume_labels=params.string_map(volume_opts.get("Labels"), "Labels"),
        volume_options=params.string_map(driver.get("Options"), "DriverConfig.Options"),
        tmpfs_size=int(tmpfs_opts.get("SizeBytes") or 0),
        tmpfs_mode=int(tmpfs_opts.get("Mode") or 0),
        subpath=str(volume_opts.get("Subpath") or ""),
    )


def _volume_filter(wanted: filters.Filters) -> VolumeFilter:
    return VolumeFilter(
        names=tuple(wanted.get("name", ())),
        drivers=tuple(wanted.get("driver", ())),
        labels=tuple(wanted.get("label", ())),
        not_labels=tuple(wanted.get("label!", ())),
        dangling=filters.bool_value(wanted, "dangling"),
    )


async def list_volumes(request: web.Request) -> web.Response:
    flt = _volume_filter(filters.query(request, _LIST_FILTERS))
    volumes = _service(request).list(flt)
    return web.json_response({"Volumes": [volume_json(v) for v in volumes], "Warnings": []})


async def create_volume(request: web.Request) -> web.Response:
    doc = await params.json_object(request)
    volume = await _service(request).create(
        name=str(doc.get("Name") or ""),
        driver=str(doc.get("Driver") or ""),
        options=params.string_map(doc.get("DriverOpts"), "DriverOpts"),
        labels=params.string_map(doc.get("Labels"), "Labels"),
    )
    return web.json_response(volume_json(volume), status=201)


async def inspect_volume(request: web.Request) -> web.Response:
    return web.json_response(volume_json(_service(request).get(request.match_info["name"])))


async def remove_volume(request: web.Request) -> web.Response:
    await _service(request).remove(request.match_info["name"], force=params.query_bool(request, "force"))
    return web.Response(status=204)


async def prune_volumes(request: web.Request) -> web.Response:
    wanted = filters.query(request, _PRUNE_FILTERS)
    # API < 1.42 pruned every unused volume; since then only anonymous ones unless all=true.
    all_volumes = not versions.at_least(request, "1.42") or bool(filters.bool_value(wanted, "all"))
    removed, reclaimed = await _service(request).prune(_volume_filter(wanted), all_volumes=all_volumes)
    return web.json_response({"VolumesDeleted": removed, "SpaceReclaimed": reclaimed})


ROUTES = [
    ("GET", "/volumes", list_volumes),
    ("POST", "/volumes/create", create_volume),
    ("POST", "/volumes/prune", prune_volumes),
    ("GET", "/volumes/{name}", inspect_volume),
    ("DELETE", "/volumes/{name}", remove_volume),
]
