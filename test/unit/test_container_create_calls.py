"""CreateContainer's containerd calls (issue 21): with the image's files known (pkg.runtime.image_files) the record
is made while Snapshots.Prepare is still on its way and the spec needs no view of the snapshot; without them
Prepare comes first and the spec reads its view.  A failure rolls back only what was made, and the snapshot only
once its Prepare has settled."""
from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pkg import errors
from pkg.containerd import containers as ctr_containers
from pkg.containerd import snapshots as ctr_snapshots
from pkg.model.container import ContainerConfig
from pkg.model.sandbox import SandboxState
from pkg.runtime import container_spec
from pkg.runtime.containers import ContainerService
from pkg.runtime.image_files import ImageFilesCache
from pkg.runtime.process_specs import ProcessSpecs
from pkg.runtime.user import ImageFiles
from pkg.store import Store

SID, CHAIN = "s" * 64, "sha256:" + "c" * 64
MOUNTS = [ctr_snapshots.Mount(type="overlay", source="overlay", options=["lowerdir=/l"])]


class Containerd:
    """Prepare held open until ``release``; every call logged in order."""

    def __init__(self, prepare_error: Exception | None = None, create_error: Exception | None = None) -> None:
        self.calls: list[str] = []
        self.release = asyncio.Event()
        self.record_made = asyncio.Event()
        self.prepare_error, self.create_error = prepare_error, create_error

    async def prepare(self, client: object, key: str, parent: str, **kwargs: Any) -> list[ctr_snapshots.Mount]:
        self.calls.append("prepare")
        await self.release.wait()
        self.calls.append("prepared")
        if self.prepare_error is not None:
            raise self.prepare_error
        return MOUNTS

    async def remove(self, client: object, key: str, snapshotter: str = "") -> None:
        self.calls.append("remove snapshot")

    async def create(self, client: object, id_: str, **kwargs: Any) -> None:
        self.calls.append("create record")
        if self.create_error is not None:
            raise self.create_error
        self.record_made.set()

    async def delete(self, client: object, id_: str) -> None:
        self.calls.append("delete record")


class Events:
    def publish(self, *args: object, **kwargs: object) -> None:
        pass


def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake: Containerd, files: ImageFiles | None,
            volumes: tuple[str, ...] = (), build_error: Exception | None = None,
            ) -> tuple[ContainerService, list[object]]:
    monkeypatch.setattr(ctr_snapshots, "prepare", fake.prepare)
    monkeypatch.setattr(ctr_snapshots, "remove", fake.remove)
    monkeypatch.setattr(ctr_containers, "create", fake.create)
    monkeypatch.setattr(ctr_containers, "delete", fake.delete)
    views: list[object] = []

    async def build(ctx: Any, metadata: Any, sandbox: object, image: Any, mounts: object,
                    *args: object) -> dict[str, Any]:
        views.append(mounts)
        volumes = ctx.container_root(metadata.id) / "volumes"  # as image VOLUMEs are seeded
        volumes.mkdir(parents=True, exist_ok=True)
        (volumes / image.id).touch()
        if build_error is not None:
            raise build_error
        return {"process": {"user": {"uid": 0, "gid": 0}}}

    monkeypatch.setattr(container_spec, "build", build)
    image = SimpleNamespace(id="sha256:" + "i" * 64, chain_id=CHAIN, snapshotter="overlayfs", repo_tags=["img"],
                            config=SimpleNamespace(stop_signal="", volumes=list(volumes)))

    class Images:
        """The lookup: ``image`` (or ``error``), once ``answer`` is set."""

        def __init__(self) -> None:
            self.image, self.error = image, None
            self.answer = asyncio.Event()
            self.answer.set()

        async def get(self, ref: str) -> object:
            fake.calls.append("lookup")
            await self.answer.wait()
            if self.error is not None:
                raise self.error
            return self.image

    sandboxes: Store[Any, Any] = Store("sandbox")
    sandboxes.add(SID, SimpleNamespace(id=SID, config=SimpleNamespace(log_directory=""), runtime_handler="",
                                       cgroup_parent="/p"), SimpleNamespace(state=SandboxState.READY, infra_pid=0))
    cache = ImageFilesCache()
    cache.put("overlayfs", CHAIN, files)
    ctx = SimpleNamespace(sandboxes=sandboxes, containers=Store("container"), images=Images(), image_files=cache,
                          cfg=SimpleNamespace(runc_root=tmp_path / "runc", runtime_handlers={}), client=object(),
                          events=Events(), process_specs=ProcessSpecs(), domain="",
                          container_root=lambda cid: tmp_path / "c" / cid,
                          container_state=lambda cid: tmp_path / "s" / cid)
    return ContainerService(ctx), views  # type: ignore[arg-type]


def config() -> ContainerConfig:
    return ContainerConfig(name="c", image="img")


async def test_known_image_files_make_the_record_while_prepare_is_on_its_way(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = Containerd()
    svc, views = service(tmp_path, monkeypatch, fake, ImageFiles(passwd="root:x:0:0::/:/bin/sh\n"))
    creating = asyncio.create_task(svc.create(SID, config()))
    await asyncio.wait_for(fake.record_made.wait(), 5)  # the old order (Prepare, then the record) never gets here
    assert sorted(fake.calls) == ["create record", "lookup", "prepare"] and not creating.done()
    fake.release.set()
    cid = await creating
    assert views == [ImageFiles(passwd="root:x:0:0::/:/bin/sh\n")]  # the kept files: no view of the snapshot
    assert svc._rootfs[cid] == MOUNTS  # the first start uses what Prepare returned
    assert svc.ctx.containers.find(cid) is not None


@pytest.mark.parametrize("volumes", [(), ("/data",)])
async def test_without_known_files_prepare_comes_first_and_the_spec_reads_its_view(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, volumes: tuple[str, ...]) -> None:
    fake = Containerd()
    fake.release.set()
    # An image with VOLUMEs needs the view even with its files known (its volumes are seeded from it).
    files = ImageFiles(passwd="root:x:0:0::/:/bin/sh\n") if volumes else None
    svc, views = service(tmp_path, monkeypatch, fake, files, volumes=volumes)
    await svc.create(SID, config())
    assert fake.calls == ["lookup", "prepare", "prepared", "create record"]
    assert views == [MOUNTS]


async def test_a_failed_spec_removes_the_snapshot_once_prepare_settled(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = Containerd()
    svc, _ = service(tmp_path, monkeypatch, fake, ImageFiles(), build_error=errors.InvalidArgument("no such user"))
    creating = asyncio.create_task(svc.create(SID, config()))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not creating.done() and fake.calls == ["lookup", "prepare"]  # the rollback waits for Prepare
    fake.release.set()
    with pytest.raises(errors.InvalidArgument):
        await creating
    assert fake.calls == ["lookup", "prepare", "prepared", "remove snapshot"]
    assert len(svc.ctx.containers) == 0 and not svc.ctx.containers.names._names  # the name is free again


async def test_a_failed_prepare_deletes_the_record_and_leaves_the_snapshot(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = Containerd(prepare_error=errors.AlreadyExists("snapshot exists"))
    fake.release.set()
    svc, _ = service(tmp_path, monkeypatch, fake, ImageFiles())
    with pytest.raises(errors.AlreadyExists):
        await svc.create(SID, config())
    assert "remove snapshot" not in fake.calls and fake.calls[-1] == "delete record"


async def test_a_failed_record_removes_the_snapshot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = Containerd(create_error=errors.Internal("bolt"))
    svc, _ = service(tmp_path, monkeypatch, fake, ImageFiles())
    creating = asyncio.create_task(svc.create(SID, config()))
    for _ in range(20):
        await asyncio.sleep(0)
    fake.release.set()
    with pytest.raises(errors.Internal):
        await creating
    assert fake.calls[-1] == "remove snapshot" and "delete record" not in fake.calls


async def made_once(svc: ContainerService, fake: Containerd) -> None:
    """A first container of the image: its lookup is what the next creates start from."""
    fake.release.set()
    await svc.create(SID, ContainerConfig(name="first", image="img"))
    fake.release.clear()
    fake.record_made.clear()
    fake.calls.clear()


async def test_the_last_image_of_the_reference_is_used_while_the_lookup_is_on_its_way(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = Containerd()
    svc, _ = service(tmp_path, monkeypatch, fake, ImageFiles())
    await made_once(svc, fake)
    images = svc.ctx.images
    images.answer.clear()  # type: ignore[attr-defined]
    fake.release.set()
    creating = asyncio.create_task(svc.create(SID, config()))
    await asyncio.wait_for(fake.record_made.wait(), 5)  # before: nothing until the lookup answered
    for _ in range(20):
        await asyncio.sleep(0)
    assert not creating.done() and len(svc.ctx.containers) == 1  # not visible before the lookup confirms
    images.answer.set()  # type: ignore[attr-defined]
    cid = await creating
    assert sorted(fake.calls) == ["create record", "lookup", "prepare", "prepared"]
    assert svc.get(cid)[0].image_id == "sha256:" + "i" * 64


async def test_a_reference_that_moved_is_made_again_from_the_new_image(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = Containerd()
    svc, _ = service(tmp_path, monkeypatch, fake, ImageFiles())
    await made_once(svc, fake)
    fake.release.set()
    images = svc.ctx.images
    images.image = SimpleNamespace(id="sha256:" + "n" * 64, chain_id="sha256:" + "d" * 64,  # type: ignore[attr-defined]
                                   snapshotter="overlayfs", repo_tags=["img"],
                                   config=SimpleNamespace(stop_signal="", volumes=[]))
    cid = await svc.create(SID, config())
    assert svc.get(cid)[0].image_id == "sha256:" + "n" * 64
    made = [c for c in fake.calls if c != "lookup"]
    assert made.count("prepare") == made.count("create record") == 2  # made twice,
    # The first image's seeded volumes went with its rollback.
    assert [p.name for p in (tmp_path / "c" / cid / "volumes").iterdir()] == ["sha256:" + "n" * 64]
    second = made.index("prepare", made.index("prepare") + 1)
    assert made.index("remove snapshot") < second and made.index("delete record") < second  # rolled back first
    assert len(svc.ctx.containers) == 2


async def test_a_reference_gone_meanwhile_rolls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = Containerd()
    svc, _ = service(tmp_path, monkeypatch, fake, ImageFiles())
    await made_once(svc, fake)
    fake.release.set()
    images = svc.ctx.images
    images.error = errors.NotFound("image img not found")  # type: ignore[attr-defined]
    with pytest.raises(errors.NotFound):
        await svc.create(SID, config())
    assert "remove snapshot" in fake.calls and "delete record" in fake.calls and len(svc.ctx.containers) == 1
    fake.calls.clear()
    with pytest.raises(errors.NotFound):  # no guess left: nothing is made
        await svc.create(SID, config())
    assert fake.calls == ["lookup"]
