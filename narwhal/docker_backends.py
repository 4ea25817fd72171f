"""Adapters from pkg to dockerapi.backends' Protocols, for what no pkg service offers as one call.

Most Protocols are met by a pkg service as it is (Engine, ImageService, VolumeService, NetworkService,
ExecManager, Builder, PodsView, EventBus, SwarmAPI).  What the handlers used to do by reaching inside the
runtime (its context, its stores, module functions taking a ContainerService) is here instead, one class per
Protocol, so dockerapi names no pkg internals and the wiring stays in the composition root.
"""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Sequence

from dockerapi.backends import (
    AttachStdio,
    Change,
    ContainerIOBackend,
    DeleteItem,
    ExecStreams,
    ImageUser,
    LogEntry,
    PathStat,
    ReadOptions,
    Sample,
    Top,
)
from pkg.docker.events import docker_events
from pkg.docker.views import attach as docker_attach
from pkg.docker.views import rootfs_archive
from pkg.docker.views import stats as docker_stats
from pkg.docker.views.logs import container_logs
from pkg.docker.views.rootfs_access import container_view, snapshot_view
from pkg.docker.views.rootfs_changes import container_changes
from pkg.images.delete import delete_image
from pkg.images.service import ImageService
from pkg.model.state import ContainerState
from pkg.runtime.containers import ContainerService
from pkg.streaming.attach import relay_attach
from pkg.system import writable_layer_sizes


class _Attach:
    """One attach (pkg.runtime.docker_attach.DockerAttach) as dockerapi's AttachStdio."""

    def __init__(self, stdio: docker_attach.DockerAttach) -> None:
        self._stdio = stdio

    @property
    def tty(self) -> bool:
        return self._stdio.tty

    def prepare(self) -> None:
        self._stdio.prepare()

    def discard_prepared(self) -> None:
        self._stdio.discard_prepared()

    async def relay_until_lost(self, streams: ExecStreams, gone: asyncio.Event) -> None:
        """Relay the container's output (and the client's input) until the run ends or the client is ``gone``
        (hijacked connection or WebSocket)."""
        session = asyncio.ensure_future(relay_attach(self._stdio, streams))
        lost = asyncio.ensure_future(gone.wait())
        try:
            await asyncio.wait([session, lost], return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
            if not session.done():
                session.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await session


class DomainIO:
    """ContainerIOBackend of one container domain's ContainerService (Docker's, or CRI's for kubelet's)."""

    def __init__(self, containers: ContainerService) -> None:
        self.containers = containers

    def exists(self, container_id: str) -> bool:
        return self.containers.ctx.containers.find(container_id) is not None

    def running(self, container_id: str) -> bool:
        found = self.containers.ctx.containers.find(container_id)
        return found is not None and found[1].state == ContainerState.RUNNING

    def tty(self, container_id: str) -> bool:
        return self.containers.get(container_id)[0].config.tty

    def image_of(self, container_id: str) -> str:
        return self.containers.get(container_id)[0].image_id

    def event(self, action: str, container_id: str) -> None:
        found = self.containers.ctx.containers.find(container_id)
        if found is not None:
            docker_events(self.containers.ctx.events).container(action, found[0])

    def attach(self, container_id: str, since_ns: int | None) -> AttachStdio:
        return _Attach(docker_attach.DockerAttach(self.containers, container_id, since_ns=since_ns))

    def logs(self, container_id: str, options: ReadOptions) -> AsyncIterator[LogEntry]:
        return container_logs(self.containers, container_id, options)

    async def resize(self, container_id: str, height: int, width: int) -> None:
        await docker_attach.resize(self.containers, container_id, height, width)

    async def stats(self, container_id: str) -> Sample:
        return await docker_stats.sample(self.containers, container_id)

    async def top(self, container_id: str, ps_args: str) -> Top:
        return await docker_stats.top(self.containers, container_id, ps_args)

    def image_users(self) -> list[ImageUser]:
        return [ImageUser(meta.id, meta.image_id, status.state == ContainerState.RUNNING)
                for meta, status in self.containers.list()]

    def stopped(self) -> list[str]:
        return [meta.id for meta, status in self.containers.list() if status.state != ContainerState.RUNNING]

    async def layer_sizes(self, container_ids: list[str]) -> dict[str, int]:
        """Writable-layer bytes of those of ``container_ids`` the domain still has."""
        metadata = {meta.id: meta for meta, _ in self.containers.list()}
        return await writable_layer_sizes(self.containers, [metadata[c] for c in container_ids if c in metadata])


class DomainArchive:
    """ArchiveBackend of the Docker domain: docker cp/export/diff through pkg.runtime's rootfs views."""

    def __init__(self, containers: ContainerService) -> None:
        self.containers = containers

    async def stat(self, container_id: str, path: str, shown: str) -> PathStat:
        async with container_view(self.containers.ctx, container_id, writable=False) as view:
            return await rootfs_archive.stat_path(view, path, shown)

    @contextlib.asynccontextmanager
    async def read(self, container_id: str, path: str,
                   shown: str) -> AsyncIterator[tuple[PathStat, AsyncIterator[bytes]]]:
        """The path's stat and its tar, the container's view held until the copy is done."""
        async with container_view(self.containers.ctx, container_id, writable=False) as view:
            st = await rootfs_archive.stat_path(view, path, shown)
            yield st, rootfs_archive.tar_path(view, path)

    async def extract(self, container_id: str, path: str, shown: str, body: AsyncIterable[bytes], *,
                      no_overwrite_dir_non_dir: bool, copy_uid_gid: bool) -> None:
        chown = None
        if copy_uid_gid:  # moby: the files get the container user's numeric owner
            user = self.containers.ctx.containers.get(container_id)[0].user
            if user is not None and (user.uid or user.gid):
                chown = (user.uid, user.gid)
        async with container_view(self.containers.ctx, container_id, writable=True) as view:
            await rootfs_archive.extract(view, path, shown, body, no_overwrite_dir_non_dir=no_overwrite_dir_non_dir,
                                         chown=chown)

    @contextlib.asynccontextmanager
    async def export(self, container_id: str) -> AsyncIterator[AsyncIterator[bytes]]:
        async with snapshot_view(self.containers.ctx, container_id) as root:
            yield rootfs_archive.export(root)

    async def changes(self, container_id: str) -> list[Change]:
        return await container_changes(self.containers.ctx, container_id)


class ImageRemoval:
    """docker rmi's rules (pkg.images.delete) over the Docker images; the users are the containers of every
    domain given (the pods' too with docker-images-for-pods: the image is one for both faces)."""

    def __init__(self, images: ImageService, users_of: Sequence[ContainerIOBackend]) -> None:
        self.images = images
        self.users_of = tuple(users_of)

    def users(self) -> list[ImageUser]:
        return [user for domain in self.users_of for user in domain.image_users()]

    async def delete(self, ref: str, users: list[ImageUser], *, force: bool = False,
                     prune: bool = True) -> list[DeleteItem]:
        return await delete_image(self.images, ref, users, force=force, prune=prune)
