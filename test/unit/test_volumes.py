"""pkg.docker.volumes: -v parsing, the local driver's records, reference counting, prune, copy-up (no root needed)."""
from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dockerapi.handlers.volumes import mount_point_json, mount_spec
from pkg import errors
from pkg.docker.volumes.binds import parse_bind, validate
from pkg.docker.volumes.model import ANONYMOUS_LABEL, MountPoint, MountSpec, MountType, VolumeFilter
from pkg.docker.volumes.service import VolumeService
from pkg.events import EventBus
from pkg.images.model import Descriptor, Image, ImageConfig
from pkg.runtime.spec_options import Propagation

CID_A, CID_B = "a" * 64, "b" * 64


def _image(volumes: list[str]) -> Image:
    return Image(id="sha256:" + "1" * 64, repo_tags=[], repo_digests=[], size=0, config=ImageConfig(volumes=volumes),
                 target=Descriptor("application/vnd.oci.image.manifest.v1+json", "sha256:" + "2" * 64, 1),
                 diff_ids=[], chain_id="sha256:" + "3" * 64)


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    """A fake image root filesystem: /data holds a file, /empty is an empty dir."""
    root = tmp_path / "rootfs"
    (root / "data" / "sub").mkdir(parents=True)
    (root / "data" / "seed.txt").write_text("from the image")
    (root / "data" / "sub" / "deep").write_text("deep")
    os.symlink("seed.txt", root / "data" / "link")
    (root / "empty").mkdir()
    return root


@pytest.fixture
def service(tmp_path: Path, rootfs: Path) -> VolumeService:
    @contextlib.asynccontextmanager
    async def view(image: Image) -> AsyncIterator[Path | None]:
        yield rootfs

    return VolumeService(tmp_path / "root", view)


# ---------------- -v strings ----------------
@pytest.mark.parametrize(("raw", "kind", "source", "target", "ro", "propagation"), [
    ("/data", MountType.VOLUME, "", "/data", False, ""),
    ("v1:/data", MountType.VOLUME, "v1", "/data", False, ""),
    ("v1:/data:ro", MountType.VOLUME, "v1", "/data", True, ""),
    ("/host:/mnt", MountType.BIND, "/host", "/mnt", False, ""),
    ("/host:/mnt:ro,rslave", MountType.BIND, "/host", "/mnt", True, "rslave"),
    ("/host:/mnt/../x/", MountType.BIND, "/host", "/x", False, ""),
])
def test_parse_bind(raw: str, kind: MountType, source: str, target: str, ro: bool, propagation: str) -> None:
    spec = parse_bind(raw)
    assert (spec.type, spec.source, spec.target, spec.read_only, spec.propagation) == (
        kind, source, target, ro, propagation)


@pytest.mark.parametrize(("raw", "message"), [
    ("a:b:c:d", "invalid volume specification: 'a:b:c:d'"),
    ("/host:rw", "invalid volume specification: '/host:rw'"),
    ("/host:/mnt:bogus", "invalid mode: bogus"),
    ("/host:/mnt:ro,rw", "invalid mode: ro,rw"),
    ("v1:/mnt:rshared", "field BindOptions must not be specified"),
    ("/host:/mnt:nocopy", "field VolumeOptions must not be specified"),
    ("/anon:ro", "invalid volume specification: '/anon:ro'"),
    ("v1:relative", "mount path must be absolute"),
    ("v1:/", "destination can't be '/'"),
    ("", "invalid volume specification"),
])
def test_parse_bind_refuses(raw: str, message: str) -> None:
    with pytest.raises(errors.InvalidArgument, match=message.replace("(", r"\(")):
        parse_bind(raw)


# ---------------- volumes ----------------
async def test_create_is_idempotent_and_persisted(tmp_path: Path, service: VolumeService) -> None:
    await service.start([])
    first = await service.create("v1", labels={"a": "b"})
    again = await service.create("v1", labels={"other": "x"})
    assert again == first
    assert Path(first.mountpoint) == tmp_path / "root" / "volumes" / "v1" / "_data"
    assert Path(first.mountpoint).is_dir()
    reloaded = VolumeService(tmp_path / "root")
    await reloaded.start([])
    assert reloaded.get("v1") == first


@pytest.mark.parametrize(("name", "options", "message"), [
    ("x/y", {}, "includes invalid characters for a local volume name"),
    ("x", {}, "volume name is too short"),
    ("ok1", {"foo": "bar"}, 'invalid option: "foo"'),
    ("ok2", {"type": "tmpfs"}, 'missing required option: "device"'),
    ("ok3", {"o": "size=1m", "type": "tmpfs"}, 'missing required option: "device"'),
])
async def test_create_refuses(service: VolumeService, name: str, options: dict[str, str], message: str) -> None:
    await service.start([])
    with pytest.raises(errors.InvalidArgument, match=message):
        await service.create(name, options=options)
    assert service.list() == []


async def test_unknown_driver_is_not_found(service: VolumeService) -> None:
    await service.start([])
    with pytest.raises(errors.NotFound, match='plugin "nfs-plugin" not found'):
        await service.create("v1", driver="nfs-plugin")


async def test_anonymous_volume_gets_a_random_name_and_the_label(service: VolumeService) -> None:
    await service.start([])
    v = await service.create()
    assert len(v.name) == 64 and v.anonymous and v.labels == {ANONYMOUS_LABEL: ""}


async def test_get_and_remove_missing(service: VolumeService) -> None:
    await service.start([])
    with pytest.raises(errors.NotFound, match="^get nosuch: no such volume$"):
        service.get("nosuch")
    with pytest.raises(errors.NotFound, match="^get nosuch: no such volume$"):
        await service.remove("nosuch")
    await service.remove("nosuch", force=True)


async def test_list_filters(service: VolumeService) -> None:
    await service.start([])
    await service.create("web-data", labels={"app": "web", "tier": "front"})
    await service.create("db-data", labels={"app": "db"})
    plan = await service.prepare([MountSpec(MountType.VOLUME, "/x", source="db-data")])
    await service.attach(plan, CID_A)

    def names(**kw: object) -> list[str]:
        return [v.name for v in service.list(VolumeFilter(**kw))]  # type: ignore[arg-type]

    assert names() == ["db-data", "web-data"]
    assert names(names=("web-data",)) == ["web-data"]
    assert names(names=("^db",)) == ["db-data"]
    assert names(labels=("app",)) == ["db-data", "web-data"]
    assert names(labels=("app=web", "tier=front")) == ["web-data"]
    assert names(labels=("app=web", "tier=back")) == []
    assert names(dangling=True) == ["web-data"]
    assert names(dangling=False) == ["db-data"]
    assert names(drivers=("other",)) == []


async def test_in_use_volume_cannot_be_removed(service: VolumeService) -> None:
    await service.start([])
    await service.create("v1")
    for cid in (CID_B, CID_A):
        plan = await service.prepare([MountSpec(MountType.VOLUME, "/data", source="v1")])
        await service.attach(plan, cid)
    with pytest.raises(errors.Conflict, match=rf"^remove v1: volume is in use - \[{CID_A}, {CID_B}\]$"):
        await service.remove("v1", force=True)
    await service.release(CID_A)
    await service.release(CID_B)
    await service.release(CID_B)  # idempotent
    await service.remove("v1")
    assert service.list() == []


async def test_references_survive_restart_and_stale_ones_are_dropped(tmp_path: Path, service: VolumeService) -> None:
    await service.start([])
    for cid in (CID_A, CID_B):
        plan = await service.prepare([MountSpec(MountType.VOLUME, "/data", source="shared")])
        await service.attach(plan, cid)
    restarted = VolumeService(tmp_path / "root")
    await restarted.start([CID_B])  # container A was removed while narwhald was down
    assert restarted.users("shared") == [CID_B]
    with pytest.raises(errors.Conflict):
        await restarted.remove("shared")


async def test_prepare_resolves_binds_volumes_and_image_volumes(tmp_path: Path, service: VolumeService) -> None:
    await service.start([])
    host = tmp_path / "host"
    plan = await service.prepare([
        parse_bind(f"{host}:/mnt:ro"),
        parse_bind("named:/data"),
        MountSpec(MountType.TMPFS, "/run", tmpfs_size=1 << 20),
    ], _image(["/data", "/empty", "/var/cache"]))
    assert host.is_dir()  # -v creates a missing host dir
    by_dest = {m.destination: m for m in plan.mounts}
    assert set(by_dest) == {"/mnt", "/data", "/run", "/empty", "/var/cache"}
    bind = by_dest["/mnt"]
    assert (bind.type, bind.source, bind.rw, bind.propagation, bind.mode) == (
        MountType.BIND, str(host), False, "rprivate", "ro")
    named = by_dest["/data"]
    assert (named.type, named.name, named.anonymous, named.rw) == (MountType.VOLUME, "named", False, True)
    anon = by_dest["/empty"]
    assert anon.type is MountType.VOLUME and anon.anonymous and service.get(anon.name).anonymous
    assert by_dest["/run"].runtime_mount() is None
    runtime = {m.container_path: m for m in plan.runtime_mounts()}
    assert runtime["/mnt"].readonly and runtime["/mnt"].propagation is Propagation.PRIVATE
    assert runtime["/data"].host_path == service.get("named").mountpoint
    # In use from prepare on, even before attach.
    with pytest.raises(errors.Conflict):
        await service.remove("named")
    await service.attach(plan, CID_A)
    assert service.users("named") == [CID_A]


async def test_copy_up_seeds_empty_volumes_only(service: VolumeService) -> None:
    await service.start([])
    plan = await service.prepare([parse_bind("seeded:/data")], _image([]))
    data = Path(service.get("seeded").mountpoint)
    assert (data / "seed.txt").read_text() == "from the image"
    assert (data / "sub" / "deep").read_text() == "deep"
    assert os.readlink(data / "link") == "seed.txt"
    await service.attach(plan, CID_A)
    (data / "seed.txt").write_text("changed by a container")
    (data / "sub" / "deep").unlink()
    plan = await service.prepare([parse_bind("seeded:/data")], _image([]))
    assert (data / "seed.txt").read_text() == "changed by a container"  # not empty: not seeded again
    assert not (data / "sub" / "deep").exists()
    nocopy = await service.prepare([parse_bind("fresh:/data:nocopy")], _image([]))
    assert list(Path(service.get("fresh").mountpoint).iterdir()) == []
    await service.discard(nocopy)


async def test_release_with_remove_anonymous(service: VolumeService) -> None:
    await service.start([])
    plan = await service.prepare([parse_bind("/anon"), parse_bind("keep:/keep")], _image(["/img"]))
    await service.attach(plan, CID_A)
    anonymous = sorted(m.name for m in plan.mounts if m.anonymous)
    assert len(anonymous) == 2
    # A second container shares one anonymous volume by name: that one must survive rm -v of the first.
    shared = anonymous[0]
    other = await service.prepare([parse_bind(f"{shared}:/x")])
    await service.attach(other, CID_B)
    await service.release(CID_A, remove_anonymous=True)
    assert sorted(v.name for v in service.list()) == sorted(["keep", shared])
    await service.release(CID_B, remove_anonymous=True)  # named use: not removed
    assert sorted(v.name for v in service.list()) == sorted(["keep", shared])


async def test_discard_undoes_a_failed_create(service: VolumeService) -> None:
    await service.start([])
    await service.create("existing")
    plan = await service.prepare([parse_bind("existing:/a"), parse_bind("new-named:/b"), parse_bind("/c")])
    await service.discard(plan)
    # The anonymous volume goes; named ones stay (moby keeps volumes created by name), none is in use.
    assert sorted(v.name for v in service.list()) == ["existing", "new-named"]
    assert service.users("existing") == [] and service.users("new-named") == []


async def test_prepare_refuses_duplicates_and_bad_specs(service: VolumeService) -> None:
    await service.start([])
    with pytest.raises(errors.InvalidArgument, match="Duplicate mount point: /data"):
        await service.prepare([parse_bind("a1:/data"), parse_bind("a2:/data/")])
    with pytest.raises(errors.InvalidArgument, match="bind source path does not exist"):
        await service.prepare([MountSpec(MountType.BIND, "/mnt", source="/nonexistent/narwhal/x")])
    with pytest.raises(errors.InvalidArgument, match="includes invalid characters"):
        await service.prepare([parse_bind("/x"), MountSpec(MountType.VOLUME, "/y", source="bad name")])
    assert service.list() == []  # the anonymous volume made before the failure was rolled back


async def test_prune(service: VolumeService) -> None:
    await service.start([])
    await service.create("named")
    anon = await service.create()
    used = await service.create()
    plan = await service.prepare([MountSpec(MountType.VOLUME, "/u", source=used.name)])
    await service.attach(plan, CID_A)
    (Path(anon.mountpoint) / "f").write_bytes(b"x" * 100)
    removed, reclaimed = await service.prune()
    assert (removed, reclaimed) == ([anon.name], 100)
    removed, _ = await service.prune(VolumeFilter(labels=("nolabel",)), all_volumes=True)
    assert removed == []
    removed, _ = await service.prune(all_volumes=True)
    assert removed == ["named"]
    assert [v.name for v in service.list()] == [used.name]


async def test_usage(service: VolumeService) -> None:
    await service.start([])
    v = await service.create("sized")
    (Path(v.mountpoint) / "f").write_bytes(b"y" * 10)
    usage = await service.usage()
    assert (usage["sized"].size, usage["sized"].ref_count) == (10, 0)


# ---------------- the Docker JSON helpers ----------------
def test_mount_spec_from_docker_json() -> None:
    spec = mount_spec({"Type": "volume", "Source": "v1", "Target": "/data", "ReadOnly": True,
                       "VolumeOptions": {"NoCopy": True, "Labels": {"a": "b"},
                                         "DriverConfig": {"Name": "local", "Options": {"type": "tmpfs"}}}})
    assert (spec.type, spec.source, spec.target, spec.read_only, spec.no_copy) == (
        MountType.VOLUME, "v1", "/data", True, True)
    assert spec.volume_labels == {"a": "b"} and spec.volume_options == {"type": "tmpfs"}
    bind = mount_spec({"Type": "bind", "Source": "/h", "Target": "/c", "BindOptions": {"Propagation": "rslave"}})
    assert (bind.type, bind.propagation, bind.create_host_path) == (MountType.BIND, "rslave", False)
    tmpfs = mount_spec({"Type": "tmpfs", "Target": "/t", "TmpfsOptions": {"SizeBytes": 4096, "Mode": 0o700}})
    assert (tmpfs.tmpfs_size, tmpfs.tmpfs_mode) == (4096, 0o700)
    with pytest.raises(errors.InvalidArgument, match="mount type unknown"):
        mount_spec({"Type": "npipe", "Target": "/x"})
    with pytest.raises(errors.InvalidArgument, match="BindOptions must not be specified"):
        mount_spec({"Type": "volume", "Target": "/x", "BindOptions": {"Propagation": "shared"}})
    assert parse_bind("/h:/c:ro").mode == "ro"
    assert mount_point_json(MountPoint(MountType.BIND, "/c", "/h", mode="ro", rw=False, propagation="rprivate")) == {
        "Type": "bind", "Source": "/h", "Destination": "/c", "Mode": "ro", "RW": False, "Propagation": "rprivate"}


async def test_volume_events(tmp_path: Path) -> None:
    bus = EventBus()
    service = VolumeService(tmp_path / "root", events=bus)
    await service.start([])
    await service.create("ev1")
    await service.create("ev1")  # existing: no second create event
    anon = await service.create()
    await service.remove("ev1")
    await service.prune()
    seen = [(e.type, e.action, e.actor_id, dict(e.attributes)) for e in bus.history(lambda e: True)]
    assert seen == [
        ("volume", "create", "ev1", {"driver": "local"}),
        ("volume", "create", anon.name, {"driver": "local"}),
        ("volume", "destroy", "ev1", {"driver": "local"}),
        ("volume", "destroy", anon.name, {"driver": "local"}),
        ("volume", "prune", "", {"reclaimed": "0"}),
    ]


async def test_a_failed_copy_up_leaves_nothing_held(tmp_path: Path) -> None:
    @contextlib.asynccontextmanager
    async def broken_view(image: Image) -> AsyncIterator[Path | None]:
        raise errors.Unavailable("containerd is away")
        yield None  # pragma: no cover

    service = VolumeService(tmp_path / "root", broken_view)
    await service.start([])
    await service.create("named")
    with pytest.raises(errors.Unavailable):
        await service.prepare([parse_bind("named:/data"), parse_bind("/anon")], _image([]))
    assert [v.name for v in service.list()] == ["named"]  # the anonymous one went, the named one stays
    assert service.users("named") == []
    await service.remove("named")


def test_anonymous_volumes_cannot_be_read_only() -> None:
    with pytest.raises(errors.InvalidArgument, match="must not set ReadOnly mode when using anonymous volumes"):
        validate(MountSpec(MountType.VOLUME, "/x", read_only=True))
    assert validate(MountSpec(MountType.VOLUME, "/x/", source="named", read_only=True)).target == "/x"
