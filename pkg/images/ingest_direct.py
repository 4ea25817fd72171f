"""A blob's bytes written into containerd's ingest file by narwhald, not relayed through ``Content.Write``;
hashed by narwhald as they are written, and handed to containerd's store as a blob it already holds.

Why: relayed as gRPC messages, 100 MB of a pull cost the containerd narwhald runs 0.65-1.06 s of CPU to
receive (HTTP/2 frames, protobuf, its writer) and narwhald ~0.25 s to send, on a pull that is CPU-bound on
a 2-core node; written to the file, they cost narwhald ~0.03 s.  Left to containerd, the commit then
rehashes the file: 0.13-0.29 s per 20 MiB blob on the pull's path (Go 1.19's sha256 has no SHA-NI path;
OpenSSL's, which hashlib uses, does), so narwhald hashes the bytes in the writer thread as they go to disk
(docs/benchmarks.md, "Blob bytes written into the ingest" and "Blobs hashed by narwhald").

How, with containerd 1.6's content store (content/local/store.go and writer.go, metadata/content.go and
services/content/contentserver/contentserver.go in its source):

1. A ``Content.Write`` stream that only STATs opens (or resumes) the ingest of ``ref``: containerd records
   it in its metadata under the caller's lease and makes ``ingest/<sha256 of its key>/`` holding a ``ref``
   file (the key, ``<namespace>/<sequence>/<ref>``) and the ``data`` file.  The stream is read to its end:
   containerd closes its writer, which lets go of the ref's lock, before it ends the stream.
2. narwhald finds that dir by its ``ref`` file, checks that the data file holds the bytes containerd said it
   had, and writes the blob's bytes into it at their offsets, hashing the file from its first byte as they
   go with the digest's algorithm (what a resumed ingest held is read and hashed first), then fsyncs it, as
   containerd's commit would.  A digest of an algorithm OCI does not register goes through Content.Write.
3. A digest other than the expected one is the blob's error (the ingest is aborted).  Otherwise the data file
   is hard-linked to where containerd keeps that blob (``blobs/<algorithm>/<hex>``), and a second stream commits:
   with the blob in its backend, containerd's metadata store takes the write as content it already holds
   (the "shared" content policy, containerd's default) and commits it without reading it, checking size
   and digest against the link.  The ingest dir it no longer knows about is removed.

If the link is gone by the commit (containerd's GC removes backend blobs no namespace names, and the link is
one until the commit names it), containerd resumes the ingest instead, rehashing the data file, which still
holds the bytes: the blob is committed all the same.  No dir, or a data file of another size than
containerd's offset, and the write goes through Content.Write as before.  A stream cut midway leaves what
arrived in the data file; a retry's STAT resumes after it.  Writers of one ref in this narwhald take turns
(``hold``): containerd's lock is not held while the bytes are written, and a containerd narwhald runs itself
has no other client.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import shutil
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from pkg import errors
from pkg import metrics as metrics_mod

log = logging.getLogger(__name__)

# Below this a blob goes through Content.Write: one message, no second stream, no file to find.
DIRECT_MIN = 1 << 20
BATCH = 4 << 20  # bytes handed to the writer thread at a time
READ = 1 << 20  # bytes read at a time to hash what a resumed ingest held
ALGORITHMS = ("sha256", "sha384", "sha512")  # the digests OCI registers; another goes through Content.Write


def hashable(digest: str) -> bool:
    """Whether narwhald can check ``digest`` itself (containerd checks any other at its commit)."""
    return digest.partition(":")[0] in ALGORITHMS


class IngestFiles:
    """The ingest dirs of the content store of a containerd narwhald runs itself."""

    def __init__(self, content_root: Path) -> None:
        """``content_root``: ``<containerd root>/io.containerd.content.v1.content``."""
        self._dir = content_root / "ingest"
        self._blobs = content_root / "blobs"
        self._turns: dict[str, tuple[asyncio.Lock, int]] = {}

    async def data_file(self, namespace: str, ref: str, offset: int) -> Path | None:
        """The data file of ``ref``'s ingest in ``namespace``, when it holds exactly ``offset`` bytes."""
        return await asyncio.to_thread(self._find, namespace, ref, offset)

    def _find(self, namespace: str, ref: str, offset: int) -> Path | None:
        key = re.compile(rf"{re.escape(namespace)}/\d+/{re.escape(ref)}")
        try:
            entries = list(os.scandir(self._dir))
        except OSError:
            return None
        for entry in entries:
            try:
                if not key.fullmatch((Path(entry.path) / "ref").read_text()):
                    continue
                data = Path(entry.path) / "data"
                return data if data.stat().st_size == offset else None
            except OSError:
                continue
        return None

    def place(self, data: Path, digest: str) -> bool:
        """``data`` (a verified, synced blob) linked to where containerd's store keeps ``digest``; False when
        that could not be done (containerd then hashes the ingest at the commit, as it does for any write)."""
        algorithm, _, hexdigest = digest.partition(":")
        target = self._blobs / algorithm / hexdigest
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(data, target)
        except FileExistsError:
            return True  # the store has it already (another namespace's, or a link a killed narwhald made)
        except OSError as exc:
            log.debug("blob %s: not linked into the store (%s); containerd hashes it at the commit", digest, exc)
            return False
        return True

    def forget(self, data: Path) -> None:
        """After a commit of a placed blob: its ingest dir, which containerd's metadata no longer names."""
        if data.parent.parent == self._dir:
            shutil.rmtree(data.parent, ignore_errors=True)

    @contextlib.asynccontextmanager
    async def hold(self, ref: str) -> AsyncIterator[None]:
        """This narwhald's only direct writer of ``ref`` for the block."""
        lock, users = self._turns.get(ref, (asyncio.Lock(), 0))
        self._turns[ref] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._turns[ref]
            if users == 1:
                del self._turns[ref]
            else:
                self._turns[ref] = (lock, users - 1)


class DataWriter:
    """Writes a blob's chunks into its ingest's data file at their offsets, in a thread, one batch in flight,
    hashing the file's bytes in order: the ``start`` bytes it held first (read back), then each batch."""

    def __init__(self, path: Path, start: int, algorithm: str = "sha256") -> None:
        """Opens ``path``, cut to ``start`` bytes (a source serving from an earlier byte than containerd's);
        its bytes are hashed with ``algorithm`` (one of ALGORITHMS)."""
        self._algorithm = algorithm
        self._fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            if os.fstat(self._fd).st_size > start:
                os.ftruncate(self._fd, start)
        except OSError:
            os.close(self._fd)
            raise
        self._start = start
        self._hash: Any = None  # made in the thread, over the first ``start`` bytes, before the first batch
        self.position = start  # bytes written once the batch in flight is done
        self._pending: asyncio.Future[None] | None = None

    async def write(self, parts: Sequence[bytes]) -> None:
        """Queues ``parts`` after what was queued before; returns once the batch before them is written."""
        await self.flush()
        at = self.position
        self.position += sum(len(p) for p in parts)
        self._pending = asyncio.ensure_future(asyncio.to_thread(self._run, parts, at))

    async def finish(self) -> str:
        """Once every batch is written: the file synced to disk, and the digest of its bytes."""
        await self.flush()
        self._pending = asyncio.ensure_future(asyncio.to_thread(self._seal))  # ``close`` waits for it too
        await self.flush()
        return f"{self._algorithm}:{self._hash.hexdigest()}"

    def _run(self, parts: Sequence[bytes], at: int) -> None:
        if self._hash is None:
            self._hash = _hash_prefix(self._fd, self._start, self._algorithm)
        _write_at(self._fd, parts, at, self._hash)

    def _seal(self) -> None:
        self._run((), self.position)  # hashes what the file held when no batch came
        os.fsync(self._fd)

    async def flush(self) -> None:
        """Waits for the batch in flight; a cancelled caller leaves it in flight, for ``close`` to wait for."""
        if self._pending is not None:
            await asyncio.shield(self._pending)
            self._pending = None

    async def close(self) -> None:
        """Waits for the batch in flight, even when cancelled meanwhile (the thread must not write into a
        closed, possibly reused, fd), then closes the file; a failed write's error is raised."""
        pending, self._pending = self._pending, None
        cancelled = False
        try:
            while pending is not None and not pending.done():
                try:
                    await asyncio.wait([pending])
                except asyncio.CancelledError:
                    cancelled = True
        finally:
            os.close(self._fd)
        if cancelled:
            raise asyncio.CancelledError
        if pending is not None:
            pending.result()


async def fill(data: Path, digest: str, size: int, start: int, chunks: AsyncIterator[bytes],
                on_bytes: Callable[[int], None] | None) -> str:
    """The source's chunks written into the ingest's data file from ``start``; returns the digest of the whole
    file, synced.  What did arrive before a cut stream stays written, so a retry resumes right after it."""
    try:
        writer = DataWriter(data, start, digest.partition(":")[0])
    except OSError as exc:
        raise errors.Internal(f"blob {digest}: open its ingest: {exc.strerror}") from None
    try:
        parts: list[bytes] = []
        buffered = 0
        async for chunk in chunks:
            parts.append(chunk)
            buffered += len(chunk)
            if writer.position + buffered > size:
                raise errors.InvalidArgument(f"blob {digest}: more than the expected {size} bytes")
            if buffered >= BATCH:
                await writer.write(parts)
                parts, buffered = [], 0
                if on_bytes is not None:
                    on_bytes(writer.position)
        if writer.position + buffered != size:
            raise errors.InvalidArgument(f"blob {digest}: {writer.position + buffered} of {size} bytes")
        if parts:
            await writer.write(parts)
            parts = []
        try:
            return await writer.finish()
        except OSError as exc:
            raise errors.Internal(f"blob {digest}: write its ingest: {exc.strerror}") from None
    finally:
        try:
            try:
                if parts and writer.position + buffered <= size:
                    await writer.write(parts)
            finally:
                await writer.close()  # also when that last write failed or was cancelled: no fd left open
        except OSError as exc:
            raise errors.Internal(f"blob {digest}: write its ingest: {exc.strerror}") from None
        finally:
            metrics_mod.current().content_bytes.labels(via="ingest").inc(writer.position - start)


def _hash_prefix(fd: int, size: int, algorithm: str) -> Any:
    """The hash of the first ``size`` bytes of ``fd``: what an ingest held before this writer (a resumed pull)."""
    digest = hashlib.new(algorithm)
    offset = 0
    while offset < size:
        chunk = os.pread(fd, min(READ, size - offset), offset)
        if not chunk:
            raise OSError(5, f"the ingest ends at byte {offset} of the {size} it held")
        digest.update(chunk)
        offset += len(chunk)
    return digest


def _write_at(fd: int, parts: Sequence[bytes], offset: int, digest: Any) -> None:
    for part in parts:
        view = memoryview(part)
        while view:
            n = os.pwrite(fd, view, offset)
            offset += n
            view = view[n:]
        digest.update(part)  # hashlib lets go of the GIL for big buffers, as pwrite does
