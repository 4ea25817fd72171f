"""Making a container (``ContainerService.create``'s work): its snapshot, its containerd record with the finished
OCI spec, its status — two containerd round trips, side by side when they can be.

The snapshot is a GC root until it is removed, as no record may hold it yet.  When the image's /etc/passwd and
/etc/group are known (pkg.runtime.image_files) the spec needs no view of the snapshot, so the record is made while
Snapshots.Prepare is on its way (containerd does not check a record's snapshot key); else Prepare comes first and
the spec reads its view.  A crash in between leaves a record without a status (released by recovery) or an active
snapshot of no container (removed by recovery: pkg.runtime.recover).  The image itself may be a guess (the one the
reference named at the last create, ``ImageGuesses``) while its lookup is on its way: the lookup is checked before
the container becomes visible, and ``ImageMoved`` says to make it again from the image the lookup found.
"""
from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

from pkg import errors
from pkg.aio import CleanupStack, rmtree
from pkg.containerd import containers as ctr_containers
from pkg.containerd import snapshots as ctr_snapshots
from pkg.images.model import Image
from pkg.model.codec import to_dict
from pkg.model.container import ContainerConfig, ContainerMetadata, ContainerStatus
from pkg.model.sandbox import SandboxMetadata
from pkg.model.state import ContainerState
from pkg.runtime import checkpoint, container_spec, features
from pkg.runtime.context import RuntimeContext
from pkg.runtime.resources import cgroups_path
from pkg.runtime.user import ImageFiles

KIND = "container"
SANDBOX_LABEL = "io.narwhal.sandbox-id"
IMAGE_GUESSES = 64  # references whose last image a create starts from while looking it up again


class ImageGuesses:
    """Reference -> the image it named at the last create (the most recent ``IMAGE_GUESSES``)."""

    def __init__(self, capacity: int = IMAGE_GUESSES) -> None:
        self._capacity = capacity
        self._images: dict[str, Image] = {}

    def get(self, ref: str) -> Image | None:
        return self._images.get(ref)

    def remember(self, ref: str, image: Image) -> None:
        self._images.pop(ref, None)
        self._images[ref] = image
        if len(self._images) > self._capacity:
            del self._images[next(iter(self._images))]

    def forget(self, ref: str) -> None:
        self._images.pop(ref, None)


class ImageMoved(Exception):
    """The reference names another image than the guess a creation started from."""

    def __init__(self, image: Image) -> None:
        super().__init__(image.id)
        self.image = image


def retrieved(lookup: asyncio.Future[Image]) -> None:
    """A lookup nobody waited for (a creation that failed first) must not log "exception never retrieved"."""
    if not lookup.cancelled():
        lookup.exception()


async def make(ctx: RuntimeContext, container_id: str, sandbox: SandboxMetadata, infra_pid: int, target_pid: int,
               config: ContainerConfig, image: Image, check: asyncio.Future[Image] | None,
               guesses: ImageGuesses) -> tuple[ContainerMetadata, list[ctr_snapshots.Mount]]:
    """Snapshot, record and status of a new container from ``image``: its metadata and the rootfs mounts Prepare
    returned.  ``check``: the lookup that must still name ``image`` before the container becomes visible (else
    ``ImageMoved``, everything rolled back)."""
    sandbox_id = sandbox.id
    metadata = ContainerMetadata(
        id=container_id,
        sandbox_id=sandbox_id,
        config=config,
        image_id=image.id,
        image_ref=config.image,
        created_at=time.time_ns(),
        log_path=str(Path(sandbox.config.log_directory) / config.log_path)
        if sandbox.config.log_directory and config.log_path else "",
        snapshot_key=container_id,
        stop_signal=image.config.stop_signal,
        cgroups_path=cgroups_path(sandbox.cgroup_parent, container_id),
    )
    name = metadata.unique_name
    ctx.containers.names.reserve(name, container_id)
    try:
        async with CleanupStack() as cleanup:
            # The container's own dirs (image volumes are made while the spec is built): a creation made again
            # from another image must not find the first one's volumes seeded.
            cleanup.add("remove container dirs",
                        lambda: rmtree(ctx.container_root(container_id), ctx.container_state(container_id)))
            prepare = asyncio.ensure_future(ctr_snapshots.prepare(
                ctx.client, container_id, image.chain_id, labels=ctr_snapshots.gc_root(),
                snapshotter=image.snapshotter))
            cleanup.add("remove snapshot", lambda: _remove_prepared(ctx, prepare, container_id, image.snapshotter))
            files: list[ctr_snapshots.Mount] | ImageFiles | None = container_spec.known_files(ctx, image)
            if files is None:
                files = await prepare
            spec = await container_spec.build(ctx, metadata, sandbox, image, files, infra_pid, target_pid)
            await ctr_containers.create(
                ctx.client, container_id, spec=spec, metadata=to_dict(metadata),
                labels={ctr_containers.KIND_LABEL: KIND, SANDBOX_LABEL: sandbox_id},
                runc_root=str(ctx.cfg.runc_root),
                runc_binary=ctx.cfg.runtime_handlers.get(sandbox.runtime_handler, ""),
                image=image.repo_tags[0] if image.repo_tags else image.id,
                snapshot_key=container_id, snapshotter=image.snapshotter,
            )
            cleanup.add("delete container record", lambda: ctr_containers.delete(ctx.client, container_id))
            mounts = await prepare
            if check is not None:
                try:
                    named = await check
                except BaseException:
                    guesses.forget(config.image)
                    raise
                guesses.remember(config.image, named)
                if named != image:
                    raise ImageMoved(named)
            metadata = dataclasses.replace(metadata, user=container_spec.process_user(spec))
            if metadata.log_path:
                Path(metadata.log_path).parent.mkdir(parents=True, exist_ok=True)
            status = ContainerStatus(ContainerState.CREATED)
            checkpoint.write(ctx.container_root(container_id), status)
            ctx.containers.add(container_id, metadata, status)
            ctx.process_specs.put(container_id, spec)
            cleanup.commit()
    except BaseException:
        ctx.containers.names.release(name)
        raise
    return metadata, mounts


async def _remove_prepared(ctx: RuntimeContext, prepare: asyncio.Future[list[ctr_snapshots.Mount]],
                           container_id: str, snapshotter: str) -> None:
    """The create's rollback of its snapshot: once its Prepare has settled (a removal while it is still on its
    way would leave the snapshot behind), and only if that Prepare made it (it may have failed on a key that
    exists: not ours to remove)."""
    await asyncio.wait({prepare})
    if prepare.cancelled() or prepare.exception() is not None:
        return
    await ctr_snapshots.remove(ctx.client, container_id, snapshotter)


async def check_handler_features(ctx: RuntimeContext, config: ContainerConfig, handler: str) -> None:
    """Refuse what the sandbox's OCI runtime cannot do, at create rather than as a failed start (containerd too)."""
    if any(m.recursive_read_only for m in config.mounts):
        binary = ctx.cfg.runtime_handlers.get(handler) or "runc"
        if not (await features.handler_features(binary)).recursive_read_only_mounts:
            raise errors.InvalidArgument(f"recursive read-only mounts are not supported by runtime handler {handler!r}")
