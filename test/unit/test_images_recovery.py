"""What a pull killed mid-way leaves (pkg.images.recovery) and the Content.Write message stream (pkg.images.content),
against fakes of containerd's lease, content and snapshot calls (the real thing: test_images_registry.py's kill -9)."""
from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import pytest

from pkg import errors
from pkg.containerd.leases import LeaseResource
from pkg.images import content as content_mod
from pkg.images import recovery
from pkg.images.content import ContentStore

SNAP = "snapshots/overlayfs"


class FakeContainerd:
    """Leases with their resources, the active ingests, the snapshots removed."""

    def __init__(self, leases: dict[str, list[LeaseResource]], active: set[str]) -> None:
        self.leases = leases
        self.active = active
        self.removed: list[str] = []
        self.deleted: list[str] = []
        self.fail_list = False

    async def list_leases(self, client: Any, prefix: str) -> list[str]:
        if self.fail_list:
            raise errors.Unavailable("containerd is away")
        return [lid for lid in self.leases if lid.startswith(prefix)]

    async def lease_resources(self, client: Any, lease_id: str) -> list[LeaseResource]:
        return list(self.leases[lease_id])

    async def reissue_lease(self, client: Any, lease_id: str, expire: dt.timedelta,
                            keep: list[LeaseResource]) -> str:
        new_id = f"narwhal-stale-{lease_id.removeprefix('narwhal-')}"
        del self.leases[lease_id]
        self.leases[new_id] = list(keep)
        return new_id

    async def delete_lease(self, client: Any, lease_id: str) -> None:
        self.deleted.append(lease_id)
        self.leases.pop(lease_id, None)

    async def active_ingests(self) -> set[str]:
        return set(self.active)

    async def remove(self, key: str) -> None:
        self.removed.append(key)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeContainerd:
    cut = [LeaseResource("content", "sha256:cfg"), LeaseResource("content", "sha256:l0"),
           LeaseResource("ingests", "narwhal-pull-sha256:l2"),  # part-written
           LeaseResource("ingests", "narwhal-pull-sha256:l0"),  # committed since: dangling
           LeaseResource(SNAP, "chain0"), LeaseResource(SNAP, "extract-0123abcd chain1")]
    fake = FakeContainerd({
        "narwhal-pull-aaa": cut,
        "narwhal-import-bbb": [LeaseResource(SNAP, "extract-4567 chainX")],  # only a cut unpack: nothing to keep
        "narwhal-stale-pull-old": [LeaseResource("content", "sha256:other")],  # an earlier restart's
        "narwhal-view-ccc": [LeaseResource(SNAP, "extract-89ab chainY")],  # not an operation recovery owns
    }, active={"narwhal-pull-sha256:l2"})
    for name in ("list_leases", "lease_resources", "reissue_lease", "delete_lease"):
        monkeypatch.setattr(recovery, name, getattr(fake, name))
    return fake


def interrupted(fake: FakeContainerd) -> recovery.Interrupted:
    unpacker = type("U", (), {"snapshotter": "overlayfs", "remove": fake.remove})()
    store = type("C", (), {"active_ingests": fake.active_ingests})()
    return recovery.Interrupted(None, store, unpacker)  # type: ignore[arg-type]


async def test_recovery_removes_cut_unpacks_and_keeps_what_a_retry_resumes(fake: FakeContainerd) -> None:
    it = interrupted(fake)
    await it.recover()
    assert sorted(fake.removed) == ["extract-0123abcd chain1", "extract-4567 chainX"]
    assert fake.leases["narwhal-stale-pull-aaa"] == [
        LeaseResource("content", "sha256:cfg"), LeaseResource("content", "sha256:l0"),
        LeaseResource("ingests", "narwhal-pull-sha256:l2"), LeaseResource(SNAP, "chain0")]
    assert "narwhal-import-bbb" not in fake.leases and "narwhal-import-bbb" in fake.deleted
    assert fake.leases["narwhal-view-ccc"]  # untouched
    assert it.pending
    await it.recover()  # once per process
    assert len(fake.removed) == 2


async def test_a_retry_that_took_everything_over_releases_the_stale_lease(fake: FakeContainerd) -> None:
    it = interrupted(fake)
    await it.recover()
    # Another image's pull: the stale leases still hold what it does not.
    await it.release_taken_over({"sha256:cfg", "sha256:l0"}, {"chain0"})
    assert "narwhal-stale-pull-aaa" in fake.leases
    # The retry, while its ingest is still open: not yet.
    await it.release_taken_over({"sha256:cfg", "sha256:l0", "sha256:l2"}, {"chain0", "chain1", "chain2"})
    assert "narwhal-stale-pull-aaa" in fake.leases
    fake.active.clear()  # the retry committed the part-written blob
    await it.release_taken_over({"sha256:cfg", "sha256:l0", "sha256:l2"}, {"chain0", "chain1", "chain2"})
    assert "narwhal-stale-pull-aaa" not in fake.leases
    assert it.pending  # the earlier restart's stale lease holds a blob nobody pulled again
    await it.release_taken_over({"sha256:other"}, set())
    assert not it.pending and "narwhal-stale-pull-old" not in fake.leases


async def test_recovery_failure_is_not_fatal(fake: FakeContainerd) -> None:
    fake.fail_list = True
    it = interrupted(fake)
    await it.recover()
    assert not it.pending and fake.removed == []


class FakeWrite:
    """A Content.Write call: records messages, acks each WRITE with the offset after it."""

    def __init__(self, held: int = 0) -> None:
        self.held = held
        self.messages: list[Any] = []
        self.replies: list[int] = [held]
        self.cancelled = False

    async def write(self, raw: bytes) -> None:
        req = content_mod.content_pb2.WriteContentRequest.FromString(raw)  # what containerd would parse
        self.messages.append(req)
        if req.action == content_mod.content_pb2.WRITE:
            self.held = req.offset + len(req.data)
            self.replies.append(self.held)
        elif req.action == content_mod.content_pb2.COMMIT:
            self.held = req.offset + len(req.data)
            self.replies.append(self.held)

    async def read(self) -> Any:
        return content_mod.content_pb2.WriteContentResponse(offset=self.replies.pop(0))

    async def done_writing(self) -> None:
        pass

    def cancel(self) -> None:
        self.cancelled = True


def store_with(call: FakeWrite) -> ContentStore:
    client = type("Client", (), {})()
    client.content_write = lambda metadata=(): call
    return ContentStore(client)  # type: ignore[arg-type]


def chunked(data: bytes, size: int, cut_at: int | None = None) -> content_mod.Source:
    async def source(offset: int) -> tuple[int, AsyncIterator[bytes]]:
        async def chunks() -> AsyncIterator[bytes]:
            for i in range(offset, len(data), size):
                if cut_at is not None and i >= cut_at:
                    raise errors.Unavailable("registry: connection reset")
                yield data[i:i + size]
                await asyncio.sleep(0)  # a real source waits for the network: the loop runs between chunks
        return offset, chunks()
    return source


async def test_write_sends_big_messages_then_commits() -> None:
    data = bytes(range(256)) * (14 << 12)  # 14 MiB: three whole messages and a tail
    call = FakeWrite()
    assert await store_with(call).write("ref", "sha256:x", len(data), chunked(data, 1 << 20))
    writes = [m for m in call.messages if m.action == content_mod.content_pb2.WRITE]
    assert [len(m.data) for m in writes] == [content_mod.WRITE_MESSAGE] * (len(data) // content_mod.WRITE_MESSAGE)
    commit = call.messages[-1]
    assert commit.action == content_mod.content_pb2.COMMIT and commit.offset + len(commit.data) == len(data)
    assert len(commit.data) == len(data) % content_mod.WRITE_MESSAGE
    assert b"".join(m.data for m in call.messages) == data


async def test_a_cut_source_leaves_what_arrived_with_containerd() -> None:
    data = bytes(range(256)) * (6 << 12)  # 6 MiB, cut after 5
    call = FakeWrite()
    with pytest.raises(errors.Unavailable):
        await store_with(call).write("ref", "sha256:x", len(data), chunked(data, 1 << 20, cut_at=5 << 20))
    assert call.held == 5 << 20  # a retry resumes at 5 MiB, not at the last whole message (4 MiB)
    assert call.cancelled


async def test_labels_are_asked_for_at_the_commit() -> None:
    """A pull streams a layer before its config names the layer's diff ID: the labels are asked for when the
    commit goes out, after the data, so what the config said by then rides with it."""
    data = bytes(range(256)) * 4096 * 6  # 6 MiB: one whole message, the rest in the commit
    streamed = 0

    def source(offset: int) -> Any:
        inner = chunked(data, 1 << 16)

        async def counted() -> tuple[int, AsyncIterator[bytes]]:
            start, chunks = await inner(offset)

            async def each() -> AsyncIterator[bytes]:
                nonlocal streamed
                async for chunk in chunks:
                    streamed += len(chunk)
                    yield chunk
            return start, each()
        return counted()

    asked_after: list[int] = []

    def labels() -> dict[str, str]:
        asked_after.append(streamed)
        return {"containerd.io/uncompressed": "sha256:d"}

    call = FakeWrite()
    assert await store_with(call).write("ref", "sha256:x", len(data), source, labels=labels)
    assert asked_after == [len(data)]
    commit = call.messages[-1]
    assert commit.action == content_mod.content_pb2.COMMIT
    assert dict(commit.labels) == {"containerd.io/uncompressed": "sha256:d"}
    assert b"".join(m.data for m in call.messages) == data
