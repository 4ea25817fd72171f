"""A blob's bytes written into containerd's ingest file by narwhald, not relayed through ``Content.Write``.

Why: relayed as gRPC messages, 100 MB of a pull cost the containerd narwhald runs 0.65-1.06 s of CPU to
receive (HTTP/2 frames, protobuf, its writer) and narwhald ~0.25 s to send, on a pull that is CPU-bound on
a 2-core node; written to the file, they cost narwhald ~0.03 s and containerd one read of the file, which
it hashes at the commit (docs/benchmarks.md, "Blob bytes written into the ingest").

How, with containerd 1.6's content store (content/local/store.go, metadata/content.go and
services/content/contentserver/contentserver.go in its source):

1. A ``Content.Write`` stream that only STATs opens (or resumes) the ingest of ``ref``: containerd records
   it in its metadata under the caller's lease and makes ``ingest/<sha256 of its key>/`` holding a ``ref``
   file (the key, ``<namespace>/<sequence>/<ref>``) and the ``data`` file.  The stream is read to its end:
   containerd closes its writer, which lets go of the ref's lock, before it ends the stream.
2. narwhald finds that dir by its ``ref`` file, checks that the data file holds the bytes containerd said it
   had, and writes the blob's bytes into it at their offsets (pkg.images.content.ContentStore.write).
3. A second stream commits: containerd resumes the ingest, hashing the data file from its start as it does
   for every resumed write, and commits with the expected size and digest, checked as for any write.

No dir, or a data file of another size than containerd's offset, and the write goes through Content.Write
as before.  A stream cut midway leaves what arrived in the data file; a retry's STAT resumes after it.
Writers of one ref in this narwhald take turns (``hold``): containerd's lock is not held while the bytes are
written, and a containerd narwhald runs itself has no other client.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

from pkg import errors
from pkg import metrics as metrics_mod

# Below this a blob goes through Content.Write: one message, no second stream, no file to find.
DIRECT_MIN = 1 << 20
BATCH = 4 << 20  # bytes handed to the writer thread at a time


class IngestFiles:
    """The ingest dirs of the content store of a containerd narwhald runs itself."""

    def __init__(self, content_root: Path) -> None:
        """``content_root``: ``<containerd root>/io.containerd.content.v1.content``."""
        self._dir = content_root / "ingest"
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
    """Writes a blob's chunks into its ingest's data file at their offsets, in a thread, one batch in flight."""

    def __init__(self, path: Path, start: int) -> None:
        """Opens ``path``, cut to ``start`` bytes (a source serving from an earlier byte than containerd's)."""
        self._fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            if os.fstat(self._fd).st_size > start:
                os.ftruncate(self._fd, start)
        except OSError:
            os.close(self._fd)
            raise
        self.position = start  # bytes written once the batch in flight is done
        self._pending: asyncio.Future[None] | None = None

    async def write(self, parts: Sequence[bytes]) -> None:
        """Queues ``parts`` after what was queued before; returns once the batch before them is written."""
        await self.flush()
        at = self.position
        self.position += sum(len(p) for p in parts)
        self._pending = asyncio.ensure_future(asyncio.to_thread(_write_at, self._fd, parts, at))

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
                on_bytes: Callable[[int], None] | None) -> None:
    """The source's chunks written into the ingest's data file from ``start``; what did arrive before a
    cut stream stays written, so a retry resumes right after it."""
    try:
        writer = DataWriter(data, start)
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


def _write_at(fd: int, parts: Sequence[bytes], offset: int) -> None:
    for part in parts:
        view = memoryview(part)
        while view:
            n = os.pwrite(fd, view, offset)
            offset += n
            view = view[n:]
