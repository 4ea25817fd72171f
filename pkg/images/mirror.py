"""``docker-images-for-pods``: every name the Docker domain gives an image is given in the CRI domain too.

Docker's image store stays the source of truth (pull, load, build, commit,
tag, rmi all run there).  Each name it gives (a tag or digest reference; not
the bare-ID records that keep dangling images) is mirrored into the CRI image
store through ``ImageService.share_from`` (blobs linked, not copied), so
kubelet's ListImages/ImageStatus find ``docker.io/library/app:dev`` and a pod
with ``imagePullPolicy: Never`` runs it.  A name Docker removes is removed from
the CRI store too, when the CRI record is still the mirrored one (a name
kubelet pulled itself is not touched) and no pod container uses the image.

Removal across faces is refused while the other face uses the image: ``docker
rmi`` counts pod containers as users (moby's conflict), and CRI RemoveImage
(kubelet's image GC) refuses an image a Docker container was created from.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

from pkg import errors
from pkg.images import reference
from pkg.images.model import Image
from pkg.images.service import ImageService

log = logging.getLogger(__name__)

LABEL_MIRRORED = "io.narwhal.image.from-docker"  # on the CRI record: this name is Docker's, mirrored


class ImageMirror:
    """The NameWatcher on the Docker image store that keeps the CRI image store's names in step."""

    def __init__(self, docker: ImageService, cri: ImageService, cri_users: Callable[[], set[str]]) -> None:
        self.docker = docker
        self.cri = cri
        self.cri_users = cri_users  # image IDs the CRI domain's containers were created from

    async def named(self, name: str, config_digest: str) -> None:
        """Docker gave ``name``: the CRI store gets it too.  A failure is logged, never fails Docker's operation
        (the image is Docker's either way; kubelet then does not find it, as without the switch)."""
        if reference.looks_like_id(name):
            return  # a record that only keeps an unnamed image: nothing for kubelet to ask for
        try:
            await self._share(name, config_digest)
        except errors.NarwhalError as exc:
            log.warning("could not share image %s with the CRI image store: %s", name, exc)

    async def _share(self, name: str, config_digest: str) -> None:
        existing = await self.cri.store.record(name)
        if existing is not None and existing.config_digest == config_digest:
            return
        image = await self.docker.get(config_digest)
        await self.cri.share_from(self.docker, image, [name], {LABEL_MIRRORED: "true"})
        log.info("image %s (%s) shared with the CRI image store", name, config_digest[:19])

    async def unnamed(self, name: str) -> None:
        if reference.looks_like_id(name):
            return
        try:
            await self._unshare(name)
        except errors.NarwhalError as exc:
            log.warning("could not remove image name %s from the CRI image store: %s", name, exc)

    async def _unshare(self, name: str) -> None:
        record = await self.cri.store.record(name)
        if record is None or record.labels.get(LABEL_MIRRORED) != "true":
            return
        if record.config_digest in self.cri_users():
            return  # a pod's container still runs from it: kubelet's image GC decides later
        remaining = [r for r in (await self.cri.store.groups()).get(record.config_digest, []) if r.name != name]
        await self.cri.store.delete(name, sync=not remaining)

    async def sync(self) -> None:
        """At start: mirror every Docker name the CRI store lacks (images made while the switch was off)."""
        for record in await self.docker.store.records():
            if record.config_digest:
                await self.named(record.name, record.config_digest)


def docker_users_guard(users: Callable[[], dict[str, str]]) -> Callable[[Image], None]:
    """CRI RemoveImage's guard: FailedPrecondition while a Docker container (ID -> image ID) uses the image."""
    def guard(image: Image) -> None:
        for container_id, image_id in users().items():
            if image_id == image.id:
                raise errors.FailedPrecondition(
                    f"image {image.id[:19]} is in use by Docker container {container_id[:12]}: "
                    "remove that container first (docker rm)")
    return guard
