"""Layers applied while they stream in (issue 21, ``stream-unpack``).

containerd 1.6's ``Diff.Apply`` reads a committed blob only, so a layer is unpacked after all its bytes are
in.  Here each layer's registry stream is teed: every chunk still goes to ``Content.Write`` (push, save and
the GC need the blob), and also to a thread that decompresses it (gzip: zlib, which releases the GIL on big
buffers; an uncompressed tar as is), checks nothing yet, and applies the tar into a staging directory of its
own (pkg.images.layer_apply, containerd's semantics), hashing the uncompressed stream.  Layers stream three at
a time and a snapshot is prepared only on a committed parent, so the install is in chain order: once the blob
is committed and the uncompressed digest equals the config's diff ID, the staging entries are renamed into the
prepared snapshot's upper dir (same filesystem: the staging root is beside the snapshotter's), the directories
the layer implied get their parents' attributes, and the snapshot is committed as ``Diff.Apply``'s would be.

Whenever anything is off (a compression other than gzip, a stream resumed at a byte the extractor did not
reach, an entry the applier does not reproduce, a digest mismatch, a rename across filesystems) the layer goes
through ``Diff.Apply`` as before, on an emptied upper dir: the fast path never decides an outcome on its own.
A staging directory goes with its layer (done, failed or cancelled); what a killed narwhald left is removed
when the next one starts (pkg.images.service's recovery).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import hashlib
import logging
import os
import queue
import shutil
import stat
import threading
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pkg.aio import run_to_completion
from pkg.images import media
from pkg.images.content import Source
from pkg.images.layer_apply import OPAQUE_XATTR, Applied, LayerApplier, Unsupported, root_path
from pkg.images.model import Descriptor

log = logging.getLogger(__name__)

STREAMABLE = (media.OCI_LAYER, media.OCI_LAYER_GZIP, media.DOCKER_LAYER, media.DOCKER_LAYER_GZIP)
BUFFERED = 16 << 20  # compressed bytes queued for one extractor before the download waits for it
INFLATED = 4 << 20  # uncompressed bytes made at a time
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_ABANDON = object()


@dataclass(frozen=True)
class Extracted:
    """A layer applied into ``staging``: its uncompressed digest and what the install must finish."""

    staging: Path
    diff_id: str
    applied: Applied
    overlay: bool  # applied as onto parents (whiteouts converted), or as the first layer


class _Abandoned(Exception):
    pass


class _Decoded:
    """The uncompressed stream, read by the extractor thread from the queued registry chunks; hashed as read.
    containerd detects the compression by its magic (compression.DecompressStream), and so does this."""

    def __init__(self, chunks: queue.Queue[Any], consumed: Any) -> None:
        self._chunks = chunks
        self._consumed = consumed
        self._digest = hashlib.sha256()
        self._inflate: Any = None
        self._codec = ""
        self._zin = b""  # compressed bytes not inflated yet
        self._ended = False  # the last chunk was queued and read
        self._out = memoryview(b"")
        self._pos = 0
        self._eof = False

    def _next_chunk(self) -> bytes | None:
        item = self._chunks.get()
        if item is _ABANDON:
            raise _Abandoned
        if item is None:
            return None
        assert isinstance(item, bytes)
        self._consumed(len(item))
        return item

    def _fill(self) -> None:
        """The next piece of the uncompressed stream (at most ``INFLATED`` bytes of it: a gzip bomb costs no
        memory), or the end."""
        if not self._zin:
            data = self._next_chunk() if not self._ended else None
            if data is None:
                self._ended = True
                if self._inflate is not None and not self._inflate.eof:
                    held = self._inflate.decompress(b"", INFLATED)  # output the limit held back, if any
                    if held:
                        self._set(held)
                        return
                    raise ValueError("gzip stream cut short")
                self._eof = True
                return
            if not self._codec:
                while len(data) < 4 and (more := self._next_chunk()) is not None:
                    data += more
                if data.startswith(ZSTD_MAGIC):
                    raise Unsupported("zstd layer")
                self._codec = "gzip" if data.startswith(GZIP_MAGIC) else "tar"
            if self._codec == "tar":
                self._set(data)
                return
            self._zin = data
        if self._inflate is None or self._inflate.eof:
            if self._inflate is not None and not self._zin.startswith(GZIP_MAGIC[:len(self._zin)]):
                raise ValueError("gzip: invalid header after a member")  # Go's multistream reader refuses it
            self._inflate = zlib.decompressobj(31)
        out = self._inflate.decompress(self._zin, INFLATED)
        self._zin = self._inflate.unused_data if self._inflate.eof else self._inflate.unconsumed_tail
        self._set(out)

    def _set(self, data: bytes) -> None:
        self._digest.update(data)  # the whole uncompressed stream is read (drain), so hashed as it is made
        self._out = memoryview(data)
        self._pos = 0

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (tarfile's stream reads a record at a time: no copy of the rest per read)."""
        while self._pos >= len(self._out) and not self._eof:
            self._fill()
        end = len(self._out) if size < 0 else min(len(self._out), self._pos + size)
        data = bytes(self._out[self._pos:end])
        self._pos = end
        return data

    def drain(self) -> str:
        """The rest of the stream (containerd reads past the end-of-archive marker too); the digest of all."""
        while self.read(1 << 20):
            pass
        return "sha256:" + self._digest.hexdigest()


class LayerStream:
    """One layer's extractor: a thread fed the blob's chunks in order from byte 0."""

    def __init__(self, staging: Path, *, overlay: bool) -> None:
        self.staging = staging
        self.fed = 0
        self._overlay = overlay
        self._chunks: queue.Queue[Any] = queue.Queue()
        self._lock = threading.Lock()
        self._queued = 0
        self._closed = False
        self._loop = asyncio.get_running_loop()
        self._room = asyncio.Event()
        self._outcome: concurrent.futures.Future[Extracted] = concurrent.futures.Future()
        self._applier: LayerApplier | None = None
        self._thread = threading.Thread(target=self._run, name="stream-unpack", daemon=True)
        self._thread.start()

    def _consumed(self, n: int) -> None:
        with self._lock:
            self._queued -= n
            wake = self._queued <= BUFFERED
        if wake:
            self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
            self._loop.call_soon_threadsafe(self._room.set)

    def _run(self) -> None:
        try:
            os.mkdir(self.staging, 0o700)
            decoded = _Decoded(self._chunks, self._consumed)
            self._applier = LayerApplier(str(self.staging), overlay=self._overlay)
            applied = self._applier.apply(decoded)  # type: ignore[arg-type]
            diff_id = decoded.drain()
            self._outcome.set_result(Extracted(self.staging, diff_id, applied, self._overlay))
        except BaseException as exc:  # every failure means: Diff.Apply does this layer
            self._outcome.set_exception(exc)
        finally:
            with self._lock:
                self._closed = True
            self._wake()

    async def feed(self, data: bytes) -> None:
        """Queue a chunk; waits while the extractor is more than ``BUFFERED`` bytes behind."""
        with self._lock:
            if self._closed:
                return
            self._queued += len(data)
        self.fed += len(data)
        self._chunks.put(data)
        while True:
            with self._lock:
                if self._queued <= BUFFERED or self._closed:
                    return
                self._room.clear()
            await self._room.wait()

    def finish(self) -> None:
        """The whole blob was fed."""
        self._chunks.put(None)

    def abandon(self, why: str) -> None:
        if not self._outcome.done():
            log.debug("stream unpack of %s abandoned: %s", self.staging.name, why)
        if self._applier is not None:
            self._applier.stopped = True  # between two entries of a chunk already queued
        self._chunks.put(_ABANDON)

    async def result(self) -> Extracted | None:
        """The extracted layer, or None when Diff.Apply must do it (the reason is logged)."""
        try:
            return await asyncio.wrap_future(self._outcome)
        except _Abandoned:
            return None
        except Exception as exc:
            log.debug("stream unpack of %s left to Diff.Apply: %s", self.staging.name, exc)
            return None

    async def discard(self) -> None:
        """Stop the extractor and remove its staging directory (whatever state it is in), even when the pull
        is cancelled meanwhile."""
        self.abandon("discarded")
        await run_to_completion(asyncio.to_thread(self._close))

    def _close(self) -> None:
        self._thread.join()
        shutil.rmtree(self.staging, ignore_errors=True)


def tee(source: Source, stream: LayerStream) -> Source:
    """``source`` whose chunks also go to ``stream``; a stream resumed at any other byte than the extractor's
    next one (a partial ingest of an earlier pull, a write cut after the tee saw its data) abandons it."""
    async def teed(offset: int) -> tuple[int, AsyncIterator[bytes]]:
        start, chunks = await source(offset)
        if start != stream.fed:
            stream.abandon(f"the blob resumes at byte {start}, the extractor is at {stream.fed}")
            return start, chunks

        async def both() -> AsyncIterator[bytes]:
            async for chunk in chunks:
                await stream.feed(chunk)
                yield chunk
        return start, both()
    return teed


def snapshot_dirs(mounts: list[Any]) -> tuple[str, list[str]]:
    """The upper dir a prepared snapshot's layer goes into and its parents' dirs (topmost first), as
    containerd's apply reads them: a bind mount (the first layer) or an overlay's upperdir/lowerdir."""
    if len(mounts) != 1:
        raise Unsupported(f"{len(mounts)} mounts")
    mount = mounts[0]
    if mount.type == "bind":
        return mount.source, []
    if mount.type != "overlay":
        raise Unsupported(f"a {mount.type} mount")
    upper, lowers = "", []
    for option in mount.options:
        if option.startswith("upperdir="):
            upper = option[len("upperdir="):]
        elif option.startswith("lowerdir="):
            lowers = option[len("lowerdir="):].split(":")
    if not upper:
        raise Unsupported("an overlay mount without an upperdir")
    return upper, lowers


def install(extracted: Extracted, upper: str, lowers: list[str]) -> None:
    """Move an extracted layer into the (empty) upper dir of its snapshot.  Raises when it cannot: the caller
    empties the upper dir and leaves the layer to Diff.Apply."""
    if bool(lowers) != extracted.overlay:
        raise Unsupported("the layer was extracted for another kind of snapshot mount")
    if os.listdir(upper):
        raise Unsupported(f"{upper} is not empty")
    staging = str(extracted.staging)
    for rel in extracted.applied.implied:
        _copy_up(staging, rel, lowers, extracted.applied)
    with contextlib.suppress(OSError):
        os.setxattr(upper, OPAQUE_XATTR, os.getxattr(staging, OPAQUE_XATTR))
    for entry in os.listdir(staging):
        try:
            os.rename(os.path.join(staging, entry), os.path.join(upper, entry))
        except OSError as exc:
            if exc.errno == errno.EXDEV:
                raise Unsupported(f"{staging} and {upper} are on different filesystems") from None
            raise


def _copy_up(staging: str, rel: str, lowers: list[str], applied: Applied) -> None:
    """containerd's mkparent for a directory the layer implied: the owner, mode, times and (non-trusted)
    xattrs of the first parent layer that has it as a directory (none: 0755 root, as made).  A directory the
    layer described later keeps its own owner, mode and times; one something was created in has the mtime
    of that creation (containerd's copy-up came first)."""
    path = os.path.join(staging, rel)
    try:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            return
    except FileNotFoundError:
        return
    for lower in lowers:
        source = root_path(lower, rel)
        try:
            st = os.lstat(source)
        except FileNotFoundError:
            continue
        if not stat.S_ISDIR(st.st_mode):
            return
        if rel not in applied.described:
            os.chown(path, st.st_uid, st.st_gid, follow_symlinks=False)
            os.chmod(path, stat.S_IMODE(st.st_mode))
            mtime = os.lstat(path).st_mtime_ns if rel in applied.touched else st.st_mtime_ns
            os.utime(path, ns=(st.st_atime_ns, mtime), follow_symlinks=False)
        for key in os.listxattr(source, follow_symlinks=False):
            if key.startswith("trusted."):
                continue
            with contextlib.suppress(FileExistsError):
                try:
                    value = os.getxattr(source, key, follow_symlinks=False)
                except OSError as exc:
                    if exc.errno in (errno.ENOTSUP, errno.ENODATA):
                        continue
                    raise
                os.setxattr(path, key, value, os.XATTR_CREATE, follow_symlinks=False)
        return


def empty(upper: str) -> None:
    """Remove whatever an install failed half-way left in an upper dir (Diff.Apply needs it empty)."""
    for entry in os.listdir(upper):
        path = os.path.join(upper, entry)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    with contextlib.suppress(OSError):
        os.removexattr(upper, OPAQUE_XATTR)


class StagingArea:
    """Where one image service's layers are extracted: a directory beside the snapshotter's (same filesystem,
    so entries rename into a snapshot), one subdirectory per layer being pulled."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._serial = 0

    def open(self, layer: Descriptor, *, overlay: bool) -> LayerStream | None:
        if layer.media_type not in STREAMABLE:
            return None
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._serial += 1
        return LayerStream(self.root / f"{self._serial}-{layer.digest.split(':')[-1][:16]}", overlay=overlay)
