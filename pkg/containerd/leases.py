"""containerd leases: what holds a pull's, an import's or a build's content and snapshots while it runs.

A lease made here expires on its own (containerd's GC label) if narwhald dies; recovery reissues or drops
the leases a previous run left (pkg.images.recovery).  Used by pulls, imports, commits and builds.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass

from pkg import errors
from pkg.aio import run_to_completion
from pkg.containerd.api.services.leases.v1 import leases_pb2
from pkg.containerd.client import Client
from pkg.containerd.errors import translate

log = logging.getLogger(__name__)

LABEL_GC_EXPIRE = "containerd.io/gc.expire"  # containerd's GC removes the lease after this time


@contextlib.asynccontextmanager
async def lease(client: Client, purpose: str, expire: dt.timedelta = dt.timedelta(hours=24)) -> AsyncIterator[str]:
    """A containerd lease holding in-flight content and snapshots; it expires on its own if we die."""
    lease_id = f"narwhal-{purpose}-{secrets.token_hex(6)}"
    until = (dt.datetime.now(dt.UTC) + expire).strftime("%Y-%m-%dT%H:%M:%SZ")
    failed = True
    try:
        # A caller cancelled during the Create (a CRI deadline) still gets the lease deleted below: containerd
        # may have made it while the cancellation was on its way.
        with translate("create lease"):
            await run_to_completion(client.leases.Create(
                leases_pb2.CreateRequest(id=lease_id, labels={LABEL_GC_EXPIRE: until}), timeout=30))
        yield lease_id
        failed = False
    finally:
        try:
            # After a failure, collect what the lease held right away: nothing half-done stays behind.
            with translate(f"delete lease {lease_id}"):
                await run_to_completion(client.leases.Delete(leases_pb2.DeleteRequest(id=lease_id, sync=failed),
                                                             timeout=60))
        except errors.NotFound:
            pass
        except errors.NarwhalError as exc:
            log.warning("%s", exc.message)


async def list_leases(client: Client, prefix: str) -> list[str]:
    with translate("list leases"):
        resp = await client.leases.List(leases_pb2.ListRequest(), timeout=30)
    return [item.id for item in resp.leases if item.id.startswith(prefix)]


@dataclass(frozen=True)
class LeaseResource:
    """One thing a lease holds: ``kind`` is containerd's resource type (``content``, ``ingests``,
    ``snapshots/<snapshotter>``), ``id`` a digest, an ingest ref or a snapshot key."""

    kind: str
    id: str


async def lease_resources(client: Client, lease_id: str) -> list[LeaseResource]:
    with translate(f"list lease resources {lease_id}"):
        resources = (await client.leases.ListResources(leases_pb2.ListResourcesRequest(id=lease_id),
                                                       timeout=30)).resources
    return [LeaseResource(res.type, res.id) for res in resources]


async def reissue_lease(client: Client, lease_id: str, expire: dt.timedelta, keep: list[LeaseResource]) -> str:
    """Move ``keep`` (of what the lease ``lease_id`` holds) to a fresh lease expiring after ``expire``, and drop
    the old lease (leases cannot be updated); returns the new lease's ID."""
    until = (dt.datetime.now(dt.UTC) + expire).strftime("%Y-%m-%dT%H:%M:%SZ")
    new_id = f"narwhal-stale-{lease_id.removeprefix('narwhal-')}"
    with translate("create lease"):
        await client.leases.Create(leases_pb2.CreateRequest(id=new_id, labels={LABEL_GC_EXPIRE: until}),
                                   timeout=30)
        for res in keep:
            await client.leases.AddResource(leases_pb2.AddResourceRequest(
                id=new_id, resource=leases_pb2.Resource(id=res.id, type=res.kind)), timeout=30)
        await client.leases.Delete(leases_pb2.DeleteRequest(id=lease_id), timeout=30)
    log.info("lease %s of a previous run now expires at %s (as %s, %d resources)", lease_id, until, new_id,
             len(keep))
    return new_id


async def delete_lease(client: Client, lease_id: str) -> None:
    """Drop a lease (gone already: fine); what only it held is left to containerd's GC."""
    with contextlib.suppress(errors.NotFound), translate(f"delete lease {lease_id}"):
        await run_to_completion(client.leases.Delete(leases_pb2.DeleteRequest(id=lease_id), timeout=60))
