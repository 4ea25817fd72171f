"""A container's files: /containers/{id}/archive (HEAD stat, GET tar, PUT extract), /export and /changes.

These serve ``docker cp``, ``docker export`` and ``docker diff`` for running
and stopped containers alike (pkg.docker.views.rootfs_access picks the view).
"""
from __future__ import annotations

import base64
import json
import logging
import stat
from collections.abc import AsyncIterator

from aiohttp import web

from dockerapi import times
from dockerapi.backend import backends, need
from dockerapi.params import query_bool
from pkg import errors
from pkg.docker.views import rootfs_archive
from pkg.docker.views.rootfs_access import container_view, snapshot_view
from pkg.docker.views.rootfs_archive import PathStat
from pkg.docker.views.rootfs_changes import container_changes
from pkg.runtime.context import RuntimeContext

log = logging.getLogger(__name__)

STAT_HEADER = "X-Docker-Container-Path-Stat"
TAR = "application/x-tar"

# Go's os.FileMode type bits, which the docker CLI decodes from the stat header.
_GO_DIR, _GO_SYMLINK, _GO_DEVICE, _GO_PIPE, _GO_SOCKET = 1 << 31, 1 << 27, 1 << 26, 1 << 25, 1 << 24
_GO_SETUID, _GO_SETGID, _GO_CHARDEV, _GO_STICKY = 1 << 23, 1 << 22, 1 << 21, 1 << 20


def go_file_mode(mode: int) -> int:
    out = stat.S_IMODE(mode) & 0o777
    if stat.S_ISDIR(mode):
        out |= _GO_DIR
    elif stat.S_ISLNK(mode):
        out |= _GO_SYMLINK
    elif stat.S_ISBLK(mode):
        out |= _GO_DEVICE
    elif stat.S_ISCHR(mode):
        out |= _GO_DEVICE | _GO_CHARDEV
    elif stat.S_ISFIFO(mode):
        out |= _GO_PIPE
    elif stat.S_ISSOCK(mode):
        out |= _GO_SOCKET
    if mode & stat.S_ISUID:
        out |= _GO_SETUID
    if mode & stat.S_ISGID:
        out |= _GO_SETGID
    if mode & stat.S_ISVTX:
        out |= _GO_STICKY
    return out


def stat_header(st: PathStat) -> str:
    body = {"name": st.name, "size": st.size, "mode": go_file_mode(st.mode), "mtime": times.rfc3339(st.mtime_ns),
            "linkTarget": st.link_target}
    return base64.b64encode(json.dumps(body, separators=(",", ":")).encode()).decode()


def _runtime(request: web.Request) -> RuntimeContext:
    return need(backends(request).containers, "containers").ctx


def _container_id(request: web.Request) -> str:
    """The Docker ID (== the core container ID) of {id}: a full ID, a unique prefix or a name."""
    ref = request.match_info["id"]
    b = backends(request)
    if b.engine is not None:
        return str(b.engine.get(ref).id)
    found = _runtime(request).containers.find(ref)
    if found is None:
        raise errors.NotFound(f"No such container: {ref}")
    return found[0].id


def _path(request: web.Request) -> str:
    path = request.query.get("path", "")
    if not path:
        raise errors.InvalidArgument("Path cannot be empty")
    return path


async def stream_tar(request: web.Request, response: web.StreamResponse, chunks: AsyncIterator[bytes],
                     what: str) -> bool:
    """Send ``response``'s head, then the tar; True when all of it went out.  Once the head is out an error
    cannot become a status: the connection is cut so the client sees the archive incomplete."""
    await response.prepare(request)
    try:
        try:
            async for chunk in chunks:
                await response.write(chunk)
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()  # stops the producer (a tar helper, an image export) however the copy ends
        await response.write_eof()
        return True
    except ConnectionError:
        # The client went away (docker cp stops at the tar's end marker; `| head` exits): fine.  aiohttp raises
        # ConnectionResetError for a closed transport, ConnectionError when it closes during a paused write.
        log.debug("%s: the client went away", what)
    except errors.NarwhalError as exc:
        log.error("%s failed mid-stream: %s", what, exc.message)
        if request.transport is not None:
            request.transport.close()
    return False


async def head_archive(request: web.Request) -> web.StreamResponse:
    path, cid = _path(request), _container_id(request)
    async with container_view(_runtime(request), cid, writable=False) as view:
        st = await rootfs_archive.stat_path(view, path, request.match_info["id"])
    return web.Response(status=200, headers={STAT_HEADER: stat_header(st), "Content-Type": "application/json"})


async def get_archive(request: web.Request) -> web.StreamResponse:
    path, cid = _path(request), _container_id(request)
    async with container_view(_runtime(request), cid, writable=False) as view:
        st = await rootfs_archive.stat_path(view, path, request.match_info["id"])
        response = web.StreamResponse(status=200, headers={"Content-Type": TAR, STAT_HEADER: stat_header(st)})
        await stream_tar(request, response, rootfs_archive.tar_path(view, path), f"archive of {path}")
        return response


async def put_archive(request: web.Request) -> web.StreamResponse:
    path, cid = _path(request), _container_id(request)
    ctx = _runtime(request)
    chown = None
    if query_bool(request, "copyUIDGID"):
        user = ctx.containers.get(cid)[0].user
        if user is not None and (user.uid or user.gid):
            chown = (user.uid, user.gid)

    async def body() -> AsyncIterator[bytes]:
        async for chunk in request.content.iter_chunked(rootfs_archive.CHUNK):
            yield chunk

    async with container_view(ctx, cid, writable=True) as view:
        await rootfs_archive.extract(view, path, request.match_info["id"], body(),
                                     no_overwrite_dir_non_dir=query_bool(request, "noOverwriteDirNonDir"), chown=chown)
    return web.Response(status=200)


async def export(request: web.Request) -> web.StreamResponse:
    cid = _container_id(request)
    async with snapshot_view(_runtime(request), cid) as root:
        response = web.StreamResponse(status=200, headers={"Content-Type": TAR})
        await stream_tar(request, response, rootfs_archive.export(root), f"export of {cid}")
        return response


async def changes(request: web.Request) -> web.Response:
    found = await container_changes(_runtime(request), _container_id(request))
    return web.json_response([{"Path": c.path, "Kind": int(c.kind)} for c in found])


ROUTES = [
    ("HEAD", "/containers/{id}/archive", head_archive),
    ("GET", "/containers/{id}/archive", get_archive),
    ("PUT", "/containers/{id}/archive", put_archive),
    ("GET", "/containers/{id}/export", export),
    ("GET", "/containers/{id}/changes", changes),
]
