"""What an image operation cut short by a killed narwhald leaves in containerd, and when it goes.

A pull (import, share) holds everything it makes under one lease that expires on its own after a day
(``containerd.io/gc.expire``).  Killed with -9, it leaves that lease holding:

* partial ingests (``narwhal-pull-<digest>``): a retry resumes them at the offset containerd holds;
* committed blobs and layer snapshots: a retry finds and reuses them;
* the active ``extract-… <chain ID>`` snapshot of the layer that was being unpacked: never reusable, since a
  retry unpacks into a fresh key (containerd's own unpacker names and treats them the same way).

Before this process makes leases of its own (narwhald's start, or the first pull), each such lease is
recovered: its ``extract-`` snapshots are removed at once, and what a retry can use moves to a
``narwhal-stale-…`` lease with a short expiry.  Once a pull has taken over everything a stale lease holds
(its ingests committed, its blobs and snapshots now the pulled image's), the stale lease goes too, so
nothing of the interrupted pull survives a successful retry.  A stale lease nobody retries expires.

A layer stream-unpack was extracting leaves its staging dir (outside containerd): ``clear_staging`` removes
them all at the same point, before this process pulls.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
import shutil
from pathlib import Path

from pkg import errors
from pkg.containerd.client import Client
from pkg.containerd.leases import LeaseResource, delete_lease, lease_resources, list_leases, reissue_lease
from pkg.images.content import ContentStore
from pkg.images.unpack import UNPACK_PREFIX, Unpacker

log = logging.getLogger(__name__)

STALE_GRACE = dt.timedelta(hours=1)
STALE_PREFIX = "narwhal-stale-"
# The leases of operations that recovery owns: ImageService makes them only after recovering.
INTERRUPTED_PREFIXES = ("narwhal-pull-", "narwhal-import-", "narwhal-share-", STALE_PREFIX)
CONTENT, INGESTS = "content", "ingests"


class Interrupted:
    """The leases of interrupted operations of a previous narwhald in one namespace (one ImageService)."""

    def __init__(self, client: Client, content: ContentStore, unpacker: Unpacker) -> None:
        self._client = client
        self._content = content
        self._unpacker = unpacker
        self._snapshots = f"snapshots/{unpacker.snapshotter}"
        self._stale: dict[str, list[LeaseResource]] = {}  # stale lease -> what it still holds
        self._done = False
        self._lock = asyncio.Lock()

    @property
    def pending(self) -> bool:
        """True while some stale lease waits for a pull to take it over."""
        return bool(self._stale)

    async def recover(self) -> None:
        """Recover once per process, before it creates leases of its own (which recovery must not touch)."""
        async with self._lock:
            if self._done:
                return
            try:
                await self._recover()
            except errors.NarwhalError as exc:  # not fatal: the leases still expire on their own
                log.warning("could not recover the leases of interrupted image operations: %s", exc)
            self._done = True

    async def _recover(self) -> None:
        leases = [lid for lid in await list_leases(self._client, "narwhal-") if lid.startswith(INTERRUPTED_PREFIXES)]
        if not leases:
            return
        active = await self._content.active_ingests()
        for lease_id in leases:
            resources = await lease_resources(self._client, lease_id)
            keep: list[LeaseResource] = []
            for res in resources:
                if res.kind == self._snapshots and res.id.startswith(UNPACK_PREFIX):
                    log.info("removing snapshot %r of an unpack cut short (lease %s)", res.id, lease_id)
                    await self._unpacker.remove(res.id)
                elif res.kind != INGESTS or res.id in active:  # an ingest committed or aborted since: dropped
                    keep.append(res)
            if lease_id.startswith(STALE_PREFIX):  # an earlier restart's: keeps its expiry
                self._stale[lease_id] = keep
            elif keep:
                self._stale[await reissue_lease(self._client, lease_id, STALE_GRACE, keep)] = keep
            else:
                await delete_lease(self._client, lease_id)

    async def release_taken_over(self, digests: set[str], chains: set[str]) -> None:
        """Drop every stale lease whose resources a pull (of blobs ``digests``, layer snapshots ``chains``)
        now holds: nothing is left for it to keep."""
        if not self._stale:
            return
        try:
            active = await self._content.active_ingests()
            for lease_id, resources in list(self._stale.items()):
                if all(self._taken_over(res, digests, chains, active) for res in resources):
                    if self._stale.pop(lease_id, None) is not None:
                        await delete_lease(self._client, lease_id)
                        log.info("stale lease %s released: a pull took over what it held", lease_id)
        except errors.NarwhalError as exc:  # not fatal: the stale leases expire on their own
            log.warning("could not release stale leases: %s", exc)

    def _taken_over(self, res: LeaseResource, digests: set[str], chains: set[str], active: set[str]) -> bool:
        if res.kind == CONTENT:
            return res.id in digests
        if res.kind == INGESTS:
            return res.id not in active
        if res.kind == self._snapshots:
            return res.id in chains
        return False


def clear_staging(root: Path) -> None:
    """The staging dirs of layers a killed narwhald was pulling (stream-unpack): nothing refers to them."""
    if root.is_dir():
        for entry in root.iterdir():
            log.info("removing %s: the staging dir of a pull cut short", entry)
            shutil.rmtree(entry, ignore_errors=True)
