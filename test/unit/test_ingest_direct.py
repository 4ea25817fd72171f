"""pkg.images.ingest_direct without containerd: finding an ingest's data file as containerd 1.6 lays it out,
writing a blob's chunks into it while hashing them, and linking the verified file into the store before the
commit (test/integration/test_images_ingest_direct.py has the real one)."""
from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from pkg import errors
from pkg.containerd.api.services.content.v1 import content_pb2
from pkg.images import ingest_direct
from pkg.images.content import ContentStore
from pkg.images.ingest_direct import DataWriter, IngestFiles, fill


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def make_ingest(root: Path, key: str, data: bytes = b"") -> Path:
    """An ingest dir as containerd's local store makes it: named by the sha256 of its key, holding the key."""
    d = root / "ingest" / hashlib.sha256(key.encode()).hexdigest()
    d.mkdir(parents=True)
    (d / "ref").write_text(key)
    (d / "data").write_bytes(data)
    return d / "data"


def test_the_data_file_is_found_by_namespace_and_ref_with_the_size_containerd_gave(tmp_path: Path) -> None:
    ref = "narwhal-pull-sha256:ab+c"  # a regex character in the ref must match only itself
    mine = make_ingest(tmp_path, f"narwhal/7/{ref}", b"12345")
    make_ingest(tmp_path, f"moby/8/{ref}", b"1")  # another namespace's ingest of the same ref
    make_ingest(tmp_path, f"narwhal/9/x{ref}", b"1")  # a ref ending with ours
    make_ingest(tmp_path, "narwhal/10/narwhal-pull-sha256:abbc", b"1")
    files = IngestFiles(tmp_path)
    assert asyncio.run(files.data_file("narwhal", ref, 5)) == mine
    assert asyncio.run(files.data_file("narwhal", ref, 4)) is None  # not what containerd said it holds
    assert asyncio.run(files.data_file("narwhal", "narwhal-pull-sha256:zz", 0)) is None
    assert asyncio.run(IngestFiles(tmp_path / "absent").data_file("narwhal", ref, 0)) is None


def test_turns_are_taken_per_ref_and_forgotten_after(tmp_path: Path) -> None:
    files = IngestFiles(tmp_path)
    order: list[str] = []

    async def writer(name: str, ref: str, gate: asyncio.Event) -> None:
        async with files.hold(ref):
            order.append(f"{name}+")
            await gate.wait()
            order.append(f"{name}-")

    async def main() -> None:
        gate_a, gate_b, gate_c = asyncio.Event(), asyncio.Event(), asyncio.Event()
        tasks = [asyncio.create_task(writer("a", "r", gate_a)), asyncio.create_task(writer("b", "r", gate_b)),
                 asyncio.create_task(writer("c", "other", gate_c))]
        await asyncio.sleep(0)
        assert order == ["a+", "c+"]  # b waits for a; c, another ref, does not
        gate_b.set()
        gate_c.set()
        gate_a.set()
        await asyncio.gather(*tasks)
        assert order.index("a-") < order.index("b+")
        assert files._turns == {}

    asyncio.run(main())


async def chunks_of(data: bytes, size: int, fail_after: int | None = None) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        if fail_after is not None and i >= fail_after:
            raise errors.Unavailable("the registry stream was cut")
        yield data[i:i + size]


def test_fill_writes_every_byte_at_its_offset_after_what_the_file_holds(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ingest_direct, "BATCH", 100_000)
    blob = os.urandom(1_000_003)
    data = tmp_path / "data"
    data.write_bytes(blob[:300_000])
    seen: list[int] = []
    digest = asyncio.run(fill(data, "sha256:x", len(blob), 300_000, chunks_of(blob[300_000:], 7_777), seen.append))
    assert data.read_bytes() == blob
    assert digest == sha(blob)  # what the file held before is hashed too, ahead of the new bytes
    assert seen == sorted(seen) and seen and seen[-1] <= len(blob)


def test_fill_from_an_earlier_byte_cuts_the_file_there_first(tmp_path: Path) -> None:
    blob = os.urandom(50_000)
    data = tmp_path / "data"
    data.write_bytes(b"\0" * 40_000)  # containerd held 40 000 bytes, the source could only start at 0
    assert asyncio.run(fill(data, "sha256:x", len(blob), 0, chunks_of(blob, 4096), None)) == sha(blob)
    assert data.read_bytes() == blob


def test_a_cut_source_leaves_what_arrived_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ingest_direct, "BATCH", 64 << 10)
    blob = os.urandom(500_000)
    data = tmp_path / "data"
    data.write_bytes(b"")
    with pytest.raises(errors.Unavailable):
        asyncio.run(fill(data, "sha256:x", len(blob), 0, chunks_of(blob, 10_000, fail_after=230_000), None))
    assert data.read_bytes() == blob[:230_000]  # a retry resumes right after it


@pytest.mark.parametrize("extra", [-1, 1])
def test_a_source_of_another_size_is_invalid_and_never_writes_past_the_size(tmp_path: Path, extra: int) -> None:
    blob = os.urandom(20_000 + extra)
    data = tmp_path / "data"
    data.write_bytes(b"")
    with pytest.raises(errors.InvalidArgument, match="sha256:x"):
        asyncio.run(fill(data, "sha256:x", 20_000, 0, chunks_of(blob, 3000), None))
    assert data.stat().st_size <= 20_000


def test_close_waits_for_the_write_in_flight_even_when_cancelled(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The thread must never write into a closed (and possibly reused) fd."""
    release = threading.Event()
    started = threading.Event()
    real = ingest_direct._write_at

    def slow_write(fd: int, parts: list[bytes], offset: int, digest: Any) -> None:
        started.set()
        release.wait(10)
        real(fd, parts, offset, digest)  # raises EBADF if the fd was closed meanwhile

    monkeypatch.setattr(ingest_direct, "_write_at", slow_write)
    data = tmp_path / "data"
    data.write_bytes(b"")

    async def main() -> None:
        writer = DataWriter(data, 0)
        await writer.write([b"abc", b"def"])
        closing = asyncio.create_task(writer.close())
        await asyncio.to_thread(started.wait, 10)
        closing.cancel()
        for _ in range(5):  # the cancellation is delivered at the first turn of the loop
            await asyncio.sleep(0)
        assert not closing.done()  # still waiting for the thread, cancelled or not
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await closing

    asyncio.run(main())
    assert data.read_bytes() == b"abcdef"


def test_a_fill_cancelled_during_its_fsync_closes_the_file_only_after_it(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The sync at the end runs in a thread too: cancelled meanwhile, the fd stays open until it is done."""
    release = threading.Event()
    started = threading.Event()
    real = os.fsync
    seen: list[int] = []

    def slow_fsync(fd: int) -> None:
        started.set()
        release.wait(10)
        seen.append(os.fstat(fd).st_size)  # raises EBADF if the fd was closed meanwhile
        real(fd)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    blob = os.urandom(10_000)
    data = tmp_path / "data"
    data.write_bytes(b"")

    async def main() -> None:
        filling = asyncio.create_task(fill(data, sha(blob), len(blob), 0, chunks_of(blob, 1000), None))
        await asyncio.to_thread(started.wait, 10)
        filling.cancel()
        for _ in range(5):
            await asyncio.sleep(0)
        assert not filling.done()  # waiting for the sync's thread, cancelled or not
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await filling

    asyncio.run(main())
    assert seen == [len(blob)]
    assert not [fd for fd in os.listdir("/proc/self/fd") if os.path.realpath(f"/proc/self/fd/{fd}") == str(data)]


class FakeStream:
    """One Content.Write stream of a fake containerd: answers each request with its offset, and ends with the
    deferred repeat of its last answer that containerd's Write sends once the client is done."""

    def __init__(self, owner: FakeContent) -> None:
        self.owner = owner
        self.requests: list[Any] = []
        self.replies: list[Any] = []
        self.ended = False

    async def write(self, raw: bytes) -> None:
        req = content_pb2.WriteContentRequest.FromString(raw)
        self.requests.append(req)
        if req.action == content_pb2.COMMIT and self.owner.refuse_commit:
            self.owner.refuse_commit = False
            self.replies.append(grpc.aio.AioRpcError(
                grpc.StatusCode.FAILED_PRECONDITION, grpc.aio.Metadata(), grpc.aio.Metadata(),
                details=f"unexpected commit digest sha256:0, expected {req.expected}: failed precondition"))
            return
        if req.action == content_pb2.COMMIT and req.expected:
            placed = self.owner.root / "blobs" / req.expected.replace(":", "/") \
                if self.owner.root is not None else None
            self.owner.blob_at_commit = placed.read_bytes() if placed is not None and placed.exists() else None
        if req.action in (content_pb2.WRITE, content_pb2.COMMIT) and req.data:
            self.owner.held = req.offset + len(req.data)
            self.owner.data[req.offset:] = req.data
        if req.action == content_pb2.STAT and self.owner.on_stat is not None:
            self.owner.on_stat(req.ref)
        self.replies.append(content_pb2.WriteContentResponse(offset=self.owner.held))

    async def read(self) -> Any:
        if self.replies:
            reply = self.replies.pop(0)
            if isinstance(reply, Exception):
                raise reply
            return reply
        assert self.ended, "read past the answers of a stream the client did not end"
        return grpc.aio.EOF

    async def done_writing(self) -> None:
        self.ended = True
        self.replies.append(content_pb2.WriteContentResponse(offset=self.owner.held))

    def cancel(self) -> None:
        pass


class FakeContent:
    def __init__(self, root: Path | None = None) -> None:
        self.streams: list[FakeStream] = []
        self.held = 0
        self.data = bytearray()
        self.on_stat: Any = None
        self.namespace = "narwhal"
        self.root = root  # the content root, to see what is in the store at the commit
        self.blob_at_commit: bytes | None = None
        self.aborted: list[str] = []
        self.refuse_commit = False  # the next commit fails as containerd's does for bytes that are not the blob
        self.content = self

    def Abort(self, request: Any, timeout: float = 0) -> Any:  # noqa: N802 - containerd's method name
        self.aborted.append(request.ref)
        self.held = 0
        self.data = bytearray()

        async def done() -> None:
            return None
        return done()

    def content_write(self, metadata: Any = ()) -> FakeStream:
        self.streams.append(FakeStream(self))
        return self.streams[-1]


def chunks_source(blob: bytes) -> Any:
    async def source(offset: int) -> tuple[int, AsyncIterator[bytes]]:
        return offset, chunks_of(blob[offset:], 256 << 10)
    return source


def test_no_ingest_file_to_be_found_means_content_write(tmp_path: Path) -> None:
    fake = FakeContent(tmp_path)
    store = ContentStore(fake, IngestFiles(tmp_path))  # type: ignore[arg-type]
    blob = os.urandom(3 << 20)
    assert asyncio.run(store.write("narwhal-pull-x", "sha256:x", len(blob), chunks_source(blob)))
    direct, relayed = fake.streams
    assert [r.action for r in direct.requests] == [content_pb2.STAT] and direct.ended
    assert relayed.requests[0].action == content_pb2.STAT and relayed.requests[-1].action == content_pb2.COMMIT
    assert bytes(fake.data) == blob == b"".join(r.data for r in relayed.requests)


def stat_makes_ingest(root: Path, held: bytes = b"") -> Any:
    """containerd's STAT of a new ref: an ingest dir for it (only the first time)."""
    return lambda ref: make_ingest(root, f"narwhal/3/{ref}", held) if not (root / "ingest").exists() else None


def test_the_bytes_go_into_the_file_containerd_made_are_linked_into_the_store_and_committed(tmp_path: Path) -> None:
    fake = FakeContent(tmp_path)
    fake.on_stat = stat_makes_ingest(tmp_path)
    store = ContentStore(fake, IngestFiles(tmp_path))  # type: ignore[arg-type]
    blob = os.urandom((3 << 20) + 5)
    seen: list[int] = []
    assert asyncio.run(store.write("narwhal-pull-y", sha(blob), len(blob), chunks_source(blob), on_bytes=seen.append))
    opened, committed = fake.streams
    assert [r.action for r in opened.requests] == [content_pb2.STAT] and opened.ended
    [commit] = committed.requests
    assert commit.action == content_pb2.COMMIT and commit.offset == len(blob) and commit.data == b""
    assert commit.total == len(blob) and commit.expected == sha(blob) and committed.ended
    # Where containerd keeps the blob, before the commit was sent (containerd then takes it as content it holds).
    assert fake.blob_at_commit == blob
    placed = tmp_path / "blobs" / "sha256" / sha(blob).split(":")[1]
    assert placed.read_bytes() == blob
    assert list((tmp_path / "ingest").iterdir()) == []  # the ingest dir containerd no longer names is gone
    assert seen[-1] == len(blob)


def test_a_sha512_blob_is_hashed_and_placed_by_its_own_algorithm(tmp_path: Path) -> None:
    fake = FakeContent(tmp_path)
    fake.on_stat = stat_makes_ingest(tmp_path)
    store = ContentStore(fake, IngestFiles(tmp_path))  # type: ignore[arg-type]
    blob = os.urandom(2 << 20)
    digest = "sha512:" + hashlib.sha512(blob).hexdigest()
    assert asyncio.run(store.write("narwhal-pull-s", digest, len(blob), chunks_source(blob)))
    assert fake.blob_at_commit == blob
    assert (tmp_path / "blobs" / "sha512" / digest.split(":")[1]).read_bytes() == blob


def test_a_digest_of_an_algorithm_narwhald_does_not_hash_goes_through_content_write(tmp_path: Path) -> None:
    fake = FakeContent(tmp_path)
    fake.on_stat = stat_makes_ingest(tmp_path)
    store = ContentStore(fake, IngestFiles(tmp_path))  # type: ignore[arg-type]
    blob = os.urandom(2 << 20)
    assert asyncio.run(store.write("narwhal-pull-b", "blake3:" + "0" * 64, len(blob), chunks_source(blob)))
    [relayed] = fake.streams  # containerd checks that one at its commit
    assert relayed.requests[0].action == content_pb2.STAT and relayed.requests[-1].action == content_pb2.COMMIT
    assert b"".join(r.data for r in relayed.requests) == blob


def test_a_blob_with_another_digest_is_invalid_aborted_and_never_placed(tmp_path: Path) -> None:
    fake = FakeContent(tmp_path)
    fake.on_stat = stat_makes_ingest(tmp_path)
    store = ContentStore(fake, IngestFiles(tmp_path))  # type: ignore[arg-type]
    blob = os.urandom(2 << 20)
    wrong = sha(b"something else")
    with pytest.raises(errors.InvalidArgument, match=f"unexpected commit digest {sha(blob)}, expected {wrong}"):
        asyncio.run(store.write("narwhal-pull-z", wrong, len(blob), chunks_source(blob)))
    assert [[r.action for r in st.requests] for st in fake.streams] == [[content_pb2.STAT]]  # no commit
    assert fake.aborted == ["narwhal-pull-z"]
    assert not (tmp_path / "blobs").exists()


def test_a_blob_the_store_holds_already_is_committed_and_its_own_bytes_dropped(tmp_path: Path) -> None:
    blob = os.urandom(2 << 20)
    there = tmp_path / "blobs" / "sha256" / sha(blob).split(":")[1]
    there.parent.mkdir(parents=True)
    there.write_bytes(blob)  # another namespace's, say
    fake = FakeContent(tmp_path)
    fake.on_stat = stat_makes_ingest(tmp_path)
    store = ContentStore(fake, IngestFiles(tmp_path))  # type: ignore[arg-type]
    assert asyncio.run(store.write("narwhal-pull-w", sha(blob), len(blob), chunks_source(blob)))
    assert [[r.action for r in st.requests] for st in fake.streams] == [[content_pb2.STAT], [content_pb2.COMMIT]]
    assert there.read_bytes() == blob and list((tmp_path / "ingest").iterdir()) == []


def test_a_blob_that_cannot_be_linked_is_committed_for_containerd_to_hash(tmp_path: Path) -> None:
    (tmp_path / "blobs").write_bytes(b"")  # not a directory: the link cannot be made
    fake = FakeContent(tmp_path)
    fake.on_stat = stat_makes_ingest(tmp_path)
    store = ContentStore(fake, IngestFiles(tmp_path))  # type: ignore[arg-type]
    blob = os.urandom(2 << 20)
    assert asyncio.run(store.write("narwhal-pull-v", sha(blob), len(blob), chunks_source(blob)))
    assert [[r.action for r in st.requests] for st in fake.streams] == [[content_pb2.STAT], [content_pb2.COMMIT]]
    assert fake.blob_at_commit is None
    [data] = (tmp_path / "ingest").glob("*/data")  # left for containerd's commit, which hashes and moves it
    assert data.read_bytes() == blob


def test_every_byte_there_already_is_committed_without_the_source(tmp_path: Path) -> None:
    fake = FakeContent(tmp_path)
    blob = os.urandom(2 << 20)
    fake.held = len(blob)  # a link a killed narwhald made, or an ingest that holds the whole blob

    async def source(offset: int) -> tuple[int, AsyncIterator[bytes]]:
        raise AssertionError("nothing should be fetched")

    store = ContentStore(fake, IngestFiles(tmp_path))  # type: ignore[arg-type]
    assert asyncio.run(store.write("narwhal-pull-u", sha(blob), len(blob), source))
    assert [[r.action for r in st.requests] for st in fake.streams] == [[content_pb2.STAT], [content_pb2.COMMIT]]


def test_a_whole_ingest_of_other_bytes_is_aborted_and_the_blob_fetched_again(tmp_path: Path) -> None:
    """An ingest that holds as many bytes as the blob but not the blob (containerd's commit refuses them): it is
    aborted and the blob comes from the source after all, not an error for the pull."""
    fake = FakeContent(tmp_path)
    blob = os.urandom(2 << 20)
    fake.held = len(blob)
    fake.refuse_commit = True
    store = ContentStore(fake, IngestFiles(tmp_path))  # type: ignore[arg-type]
    assert asyncio.run(store.write("narwhal-pull-t", sha(blob), len(blob), chunks_source(blob)))
    assert fake.aborted == ["narwhal-pull-t"]
    stat, refused, relayed = fake.streams
    assert [r.action for r in stat.requests] == [content_pb2.STAT]
    assert [r.action for r in refused.requests] == [content_pb2.COMMIT]
    assert relayed.requests[0].action == content_pb2.STAT and relayed.requests[-1].action == content_pb2.COMMIT
    assert bytes(fake.data) == blob == b"".join(r.data for r in relayed.requests)


def test_a_failed_write_is_internal_and_leaves_no_fd_open(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(fd: int, parts: list[bytes], offset: int, digest: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ingest_direct, "_write_at", full)
    monkeypatch.setattr(ingest_direct, "BATCH", 3000)  # the failure surfaces at the next batch, and again at the last
    data = tmp_path / "data"
    data.write_bytes(b"")
    with pytest.raises(errors.Internal, match="No space left on device"):
        asyncio.run(fill(data, "sha256:x", 10_000, 0, chunks_of(os.urandom(10_000), 1000), None))
    assert not [fd for fd in os.listdir("/proc/self/fd") if os.path.realpath(f"/proc/self/fd/{fd}") == str(data)]
