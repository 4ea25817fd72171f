"""containerd's content store and leases, as typed async helpers.

Blobs are written through ``Content.Write`` with their expected digest and
size, under a stable ingest ref, so an interrupted write (narwhald killed, the
registry gone) resumes at the offset containerd already holds.  containerd
verifies digest and size at commit; a mismatch aborts the ingest so nothing
half-written stays behind.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import IO

import grpc
from google.protobuf import field_mask_pb2

from pkg import errors
from pkg import metrics as metrics_mod
from pkg.aio import run_to_completion
from pkg.containerd import content_wire
from pkg.containerd.api.services.content.v1 import content_pb2
from pkg.containerd.api.services.leases.v1 import leases_pb2
from pkg.containerd.client import Client
from pkg.containerd.errors import from_grpc, translate
from pkg.images.ingest_direct import DIRECT_MIN, IngestFiles, fill, hashable

log = logging.getLogger(__name__)

WRITE_CHUNK = 1 << 20  # reads of local files (imports, archives)
# One Content.Write message: big, since each message costs a trip through grpc.aio's write queue and the
# event loop, and a containerd ack (containerd accepts up to 16 MiB); well under the budget below.
WRITE_MESSAGE = 4 << 20
WRITE_WINDOW = 3  # messages written before their acks are read: 12 MiB in flight per blob at most
LOCKED_RETRIES = 60
LOCKED_DELAY = 0.5
LEASE_HEADER = "containerd-lease"

Metadata = Sequence[tuple[str, str]]
# source(offset) -> (start offset actually served, chunk iterator)
Source = Callable[[int], Awaitable[tuple[int, AsyncIterator[bytes]]]]
OnBytes = Callable[[int], None]
Labels = dict[str, str] | Callable[[], dict[str, str]]  # a function: asked at the commit, what is known by then


@dataclass(frozen=True)
class ContentInfo:
    digest: str
    size: int
    labels: dict[str, str] = field(default_factory=dict)


def lease_md(lease: str | None) -> Metadata:
    return ((LEASE_HEADER, lease),) if lease else ()


def file_source(fobj: IO[bytes]) -> Source:
    """A ``Source`` reading an open, seekable file from the offset containerd already holds, so a resumed
    or retried write (another writer held the ingest) sends only what is missing."""
    async def source(offset: int) -> tuple[int, AsyncIterator[bytes]]:
        await asyncio.to_thread(fobj.seek, offset)

        async def chunks() -> AsyncIterator[bytes]:
            while data := await asyncio.to_thread(fobj.read, WRITE_CHUNK):
                yield data
        return offset, chunks()
    return source


class ContentStore:
    def __init__(self, client: Client, ingests: IngestFiles | None = None) -> None:
        """``ingests``: the ingest files of a containerd narwhald runs itself, which a blob's bytes are then
        written into directly (pkg.images.ingest_direct); None: every byte through Content.Write."""
        self._client = client
        self._ingests = ingests

    async def info(self, digest: str) -> ContentInfo | None:
        try:
            with translate(f"content info {digest}"):
                resp = await self._client.content.Info(content_pb2.InfoRequest(digest=digest), timeout=30)
        except errors.NotFound:
            return None
        return ContentInfo(resp.info.digest, resp.info.size, dict(resp.info.labels))

    async def read(self, digest: str, limit: int = 64 << 20) -> bytes:
        """A whole (small) blob: manifests, indexes, configs."""
        chunks = []
        total = 0
        async for chunk in self.stream(digest):
            total += len(chunk)
            if total > limit:
                raise errors.InvalidArgument(f"content {digest} is larger than {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def stream(self, digest: str, offset: int = 0) -> AsyncIterator[bytes]:
        call = self._client.content.Read(content_pb2.ReadContentRequest(digest=digest, offset=offset))
        with translate(f"read content {digest}"):
            async for resp in call:
                yield resp.data

    async def update_labels(self, digest: str, labels: dict[str, str]) -> None:
        """Set (or, with an empty value, remove) the given labels, leaving the others alone."""
        info = content_pb2.Info(digest=digest, labels={k: v for k, v in labels.items() if v})
        mask = field_mask_pb2.FieldMask(paths=[f"labels.{k}" for k in labels])
        with translate(f"update content labels {digest}"):
            await self._client.content.Update(content_pb2.UpdateRequest(info=info, update_mask=mask), timeout=30)

    async def delete(self, digest: str) -> None:
        with contextlib.suppress(errors.NotFound), translate(f"delete content {digest}"):
            await self._client.content.Delete(content_pb2.DeleteContentRequest(digest=digest), timeout=30)

    async def status(self, ref: str) -> int | None:
        """How many bytes of the ingest ``ref`` containerd holds (None: no such ingest)."""
        try:
            with translate(f"content status {ref}"):
                resp = await self._client.content.Status(content_pb2.StatusRequest(ref=ref), timeout=30)
        except errors.NotFound:
            return None
        return int(resp.status.offset)

    async def active_ingests(self) -> set[str]:
        """The refs of every ingest in progress (or cut short) in this namespace."""
        with translate("list content ingests"):
            resp = await self._client.content.ListStatuses(content_pb2.ListStatusesRequest(), timeout=30)
        return {status.ref for status in resp.statuses}

    async def add_to_lease(self, digest: str, lease: str) -> None:
        """Hold content that is already present (another image's layer) for this operation too."""
        with translate(f"lease content {digest}"):
            await self._client.leases.AddResource(leases_pb2.AddResourceRequest(
                id=lease, resource=leases_pb2.Resource(id=digest, type="content")), timeout=30)

    async def abort(self, ref: str) -> None:
        try:
            with translate(f"abort ingest {ref}"):
                await run_to_completion(self._client.content.Abort(content_pb2.AbortRequest(ref=ref), timeout=30))
        except errors.NotFound:
            pass
        except errors.NarwhalError as exc:
            log.warning("%s", exc.message)

    async def write_bytes(self, ref: str, digest: str, data: bytes, labels: dict[str, str] | None = None,
                          lease: str | None = None) -> None:
        async def source(offset: int) -> tuple[int, AsyncIterator[bytes]]:
            async def chunks() -> AsyncIterator[bytes]:
                for i in range(offset, len(data), WRITE_CHUNK):
                    yield data[i:i + WRITE_CHUNK]
            return offset, chunks()

        await self.write(ref, digest, len(data), source, labels=labels, lease=lease)

    async def write(self, ref: str, digest: str, size: int, source: Source, *,
                    labels: Labels | None = None, lease: str | None = None,
                    on_bytes: OnBytes | None = None) -> bool:
        """Stream a blob into the store, resuming an earlier ingest of ``ref``.

        Returns False when the blob was already present.  On a digest or size
        mismatch the ingest is aborted and InvalidArgument raised.  While another
        writer holds ``ref`` (a concurrent pull of the same blob, or the stream of a
        narwhald that just died) we wait for it: it either commits (we are done) or
        lets go (we resume its data).  ``labels`` may be a function, asked at the
        commit: a pull streams its layers while the config that names their labels
        (the diff IDs) is still on its way, and sets them afterwards if it was late.
        """
        for attempt in range(LOCKED_RETRIES):
            try:
                if self._ingests is not None and size >= DIRECT_MIN and hashable(digest):
                    async with self._ingests.hold(ref):
                        written = await self._write_direct(self._ingests, ref, digest, size, source, labels,
                                                           lease, on_bytes)
                    if written is not None:
                        return written
                return await self._write_once(ref, digest, size, source, labels, lease, on_bytes)
            except errors.Unavailable as exc:
                if "locked" not in exc.message or attempt == LOCKED_RETRIES - 1:
                    raise
                await asyncio.sleep(LOCKED_DELAY)
        raise AssertionError("unreachable")

    async def _write_once(self, ref: str, digest: str, size: int, source: Source, labels: Labels | None,
                          lease: str | None, on_bytes: OnBytes | None) -> bool:
        # The bulk channel (client.content_write): messages are bytes encoded around their data, so each byte
        # is copied once on its way to containerd (content_wire), and no interceptor queue sits in between.
        call = self._client.content_write(lease_md(lease))
        committed = False
        start = position = 0
        try:
            await _send(call, content_wire.write_request(content_wire.STAT, ref=ref, total=size, expected=digest))
            offset = (await _read(call)).offset
            if offset > size:
                offset = 0
            start, chunks = await source(offset)
            if on_bytes is not None and start:
                on_bytes(start)
            position = start
            # Chunks are gathered and joined once per message, with the message's head (write_request).
            parts: list[bytes] = []
            buffered = 0
            # containerd answers every message; keep a few writes in flight instead of one round trip each.
            expected: collections.deque[int] = collections.deque()
            try:
                async for chunk in chunks:
                    parts.append(chunk)
                    buffered += len(chunk)
                    if position + buffered > size:
                        raise errors.InvalidArgument(f"blob {digest}: more than the expected {size} bytes")
                    if buffered >= WRITE_MESSAGE:
                        # offset 0 means "truncate and start over" to containerd: what a restarted source wants.
                        await _send(call, content_wire.write_request(content_wire.WRITE, offset=position,
                                                                     parts=parts))
                        position += buffered
                        expected.append(position)
                        parts, buffered = [], 0
                        if len(expected) >= WRITE_WINDOW:
                            await self._ack(call, expected.popleft(), on_bytes)
            except errors.Unavailable:
                # The source broke off (a registry stream cut): what did arrive goes in first, so a retry
                # resumes right after it rather than at the last whole message.
                if parts:
                    await _send(call, content_wire.write_request(content_wire.WRITE, offset=position, parts=parts))
                    position += buffered
                    expected.append(position)
                while expected:
                    await self._ack(call, expected.popleft(), on_bytes)
                raise
            while expected:
                await self._ack(call, expected.popleft(), on_bytes)
            commit_labels = labels_now(labels)
            await _send(call, content_wire.write_request(
                content_wire.COMMIT, ref=ref, total=size, expected=digest, offset=position, parts=parts,
                labels=commit_labels))
            await _read(call)
            committed = True
            position += buffered
            if on_bytes is not None:
                on_bytes(size)
            await call.done_writing()
            return True
        except grpc.aio.AioRpcError as err:
            return await self._write_failed(err, ref, digest, labels)
        except errors.InvalidArgument:
            await self.abort(ref)
            raise
        finally:
            if position > start:
                metrics_mod.current().content_bytes.labels(via="content_write").inc(position - start)
            if not committed:
                call.cancel()

    async def _write_failed(self, err: grpc.aio.AioRpcError, ref: str, digest: str, labels: Labels | None) -> bool:
        """containerd's answer to a write that did not commit: False when the blob was there already."""
        if err.code() == grpc.StatusCode.ALREADY_EXISTS:
            if labels is not None and (existing := labels_now(labels)):
                await self.update_labels(digest, existing)
            return False
        if _not_the_blob(err):
            await self.abort(ref)
            raise errors.InvalidArgument(f"blob {digest}: {err.details()}") from None
        raise from_grpc(err, f"write content {digest}") from err

    async def _write_direct(self, ingests: IngestFiles, ref: str, digest: str, size: int, source: Source,
                            labels: Labels | None, lease: str | None, on_bytes: OnBytes | None) -> bool | None:
        """``write`` with the bytes put in the ingest's data file, hashed here and linked into the store before
        the commit (pkg.images.ingest_direct); None when that file is not as containerd describes it (the
        caller then writes through Content.Write)."""
        try:
            opened = await self._single(content_wire.write_request(
                content_wire.STAT, ref=ref, total=size, expected=digest), lease)

            def commit() -> bytes:  # the labels as known at the commit (a pull's diff IDs may come late)
                return content_wire.write_request(content_wire.COMMIT, ref=ref, total=size, expected=digest,
                                                  offset=size, labels=labels_now(labels))

            if opened.offset == size:
                # Every byte is there: an ingest that holds the whole blob (containerd hashes it at the commit),
                # or the blob itself in containerd's store (a link whose commit a killed narwhald never sent).
                try:
                    await self._single(commit(), lease)
                except grpc.aio.AioRpcError as err:
                    if not _not_the_blob(err):
                        raise
                    await self.abort(ref)
                    return None  # a whole ingest of other bytes: the blob is fetched again (Content.Write)
            else:
                data = await ingests.data_file(self._client.namespace, ref, opened.offset)
                if data is None:
                    return None
                offset = 0 if opened.offset > size else opened.offset
                start, chunks = await source(offset)
                if start > offset:
                    raise errors.Internal(f"blob {digest}: the source served byte {start} when asked for {offset}")
                if on_bytes is not None and start:
                    on_bytes(start)
                actual = await fill(data, digest, size, start, chunks, on_bytes)
                if actual != digest:
                    raise errors.InvalidArgument(
                        f"blob {digest}: unexpected commit digest {actual}, expected {digest}")
                placed = await asyncio.to_thread(ingests.place, data, digest)
                await self._single(commit(), lease)
                if placed:
                    await asyncio.to_thread(ingests.forget, data)
        except grpc.aio.AioRpcError as err:
            return await self._write_failed(err, ref, digest, labels)
        except errors.InvalidArgument:
            await self.abort(ref)
            raise
        if on_bytes is not None:
            on_bytes(size)
        return True

    async def _single(self, request: bytes, lease: str | None) -> content_pb2.WriteContentResponse:
        """A Content.Write stream of one request, read to its end: containerd closes its writer (letting go of
        the ref) before it ends the stream, and sends its state once more then."""
        call = self._client.content_write(lease_md(lease))
        try:
            await _send(call, request)
            resp = await _read(call)
            await call.done_writing()
            while await call.read() is not grpc.aio.EOF:
                pass
            return resp
        finally:
            call.cancel()

    @staticmethod
    async def _ack(call: grpc.aio.StreamStreamCall, offset: int, on_bytes: OnBytes | None) -> None:
        resp = await _read(call)
        if resp.offset != offset:
            raise errors.Internal(f"content write: containerd at offset {resp.offset}, expected {offset}")
        if on_bytes is not None:
            on_bytes(offset)


def _not_the_blob(err: grpc.aio.AioRpcError) -> bool:
    """containerd's commit refused the bytes for their size or digest."""
    return err.code() == grpc.StatusCode.FAILED_PRECONDITION and "unexpected commit" in (err.details() or "")


def labels_now(labels: Labels | None) -> dict[str, str]:
    """The labels as known now (a function is asked)."""
    if labels is None:
        return {}
    return labels() if callable(labels) else labels


async def _send(call: grpc.aio.StreamStreamCall, message: bytes) -> None:
    """One request; when containerd has ended the stream already (an error answer), its status is raised."""
    try:
        await call.write(message)
    except asyncio.InvalidStateError:
        await _read(call)  # raises the RPC's error
        raise errors.Internal("content write: containerd ended the stream early") from None


async def _read(call: grpc.aio.StreamStreamCall) -> content_pb2.WriteContentResponse:
    resp = await call.read()
    if resp is grpc.aio.EOF:
        raise errors.Internal("content write: containerd ended the stream early")
    assert isinstance(resp, content_pb2.WriteContentResponse)
    return resp
