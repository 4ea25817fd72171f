"""The image core in-process against a narwhald's containerd: import/export, push, big parallel pulls."""
from __future__ import annotations

import io
import json
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path

import mkimage
import pytest
from cri_api.v1 import api_pb2
from lib import images
from lib.daemon import DaemonProcess
from lib.registry import Registry

from pkg.config import Config
from pkg.containerd.client import Client
from pkg.images.model import Progress
from pkg.images.service import ImageService


@pytest.fixture
async def core(daemon: DaemonProcess) -> AsyncIterator[ImageService]:
    client = Client(daemon.state / "containerd" / "containerd.sock", "narwhal")
    yield ImageService(client, Config(root=daemon.root, state=daemon.state))
    await client.close()


async def test_import_oci_layout_dir_names_and_unpacks(core: ImageService, daemon: DaemonProcess,
                                                       tmp_path: Path) -> None:
    pause = mkimage.build("pause")
    mkimage.write_oci_layout(tmp_path / "pause", pause, ref_name="3.9")
    [img] = await core.import_archive(tmp_path / "pause", name="narwhal.local/pause", pinned=True)
    assert img.id == pause.config.digest and img.pinned
    assert img.repo_tags == ["narwhal.local/pause:3.9"]
    assert img.config.entrypoint == ["/catatonit", "-P"]
    assert img.chain_id in images.snapshots(daemon)
    assert (await core.get("narwhal.local/pause:3.9")).id == img.id
    assert images.leases(daemon) == set()
    # Importing again is a no-op that still answers with the image.
    assert [i.id for i in await core.import_archive(tmp_path / "pause", name="narwhal.local/pause")] == [img.id]


async def test_save_load_push_pull_keeps_manifest_digest(core: ImageService, daemon: DaemonProcess,
                                                         registry: Registry, tmp_path: Path) -> None:
    built = images.push(registry.host, "archive/src", "v1", filler_layers=1, filler_mb=1)
    src = f"{registry.host}/archive/src:v1"
    pulled = await core.pull(src)
    assert pulled.target.digest == built.manifest.digest

    saved = tmp_path / "saved.tar"
    await core.export_to([src], saved)
    with tarfile.open(saved) as tar:
        members = set(tar.getnames())
        docker_manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
    assert {"oci-layout", "index.json", "manifest.json", "repositories"} <= members
    assert docker_manifest[0]["RepoTags"] == [f"{registry.host}/archive/src:v1"]
    assert index["manifests"][0]["digest"] == built.manifest.digest

    await core.remove(src)
    assert images.content(daemon) == set() and images.snapshots(daemon) == set()

    [loaded] = await core.import_archive(saved)
    assert loaded.id == built.config.digest and loaded.repo_tags == [src]
    assert loaded.target.digest == built.manifest.digest

    dest = f"{registry.host}/archive/dest:v2"
    await core.tag(src, dest)
    events: list[Progress] = []
    assert await core.push(dest, progress=events.append) == built.manifest.digest
    pushed = {e.digest for e in events if e.status == "pushed"}
    assert pushed == {built.config.digest, built.manifest.digest, *(layer.digest for layer in built.layers)}
    assert await core.push(dest) == built.manifest.digest  # again: every blob exists, nothing uploaded

    await core.remove(loaded.id)
    image_ref = daemon.images().PullImage(api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=dest))).image_ref
    status = daemon.images().ImageStatus(api_pb2.ImageStatusRequest(image=api_pb2.ImageSpec(image=dest))).image
    assert image_ref == built.config.digest
    assert list(status.repo_digests) == [f"{registry.host}/archive/dest@{built.manifest.digest}"]


async def test_import_classic_docker_archive(core: ImageService, daemon: DaemonProcess, tmp_path: Path) -> None:
    """The pre-v25 ``docker save`` layout: uncompressed layer tars, a config file, manifest.json."""
    import gzip

    built = mkimage.build("busybox")
    raw_layer = gzip.decompress(built.layers[0].data)
    config_hex = built.config.digest.split(":")[1]
    archive = tmp_path / "classic.tar"
    with tarfile.open(archive, "w") as tar:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        add(f"{config_hex}.json", built.config.data)
        add("abc123/layer.tar", raw_layer)
        add("manifest.json", json.dumps([{"Config": f"{config_hex}.json", "RepoTags": ["classic/box:1"],
                                          "Layers": ["abc123/layer.tar"]}]).encode())
    [img] = await core.import_archive(archive)
    assert img.id == built.config.digest
    assert img.repo_tags == ["docker.io/classic/box:1"]
    assert img.chain_id == built.diff_ids[0] and img.chain_id in images.snapshots(daemon)


async def test_bad_archives(core: ImageService, daemon: DaemonProcess, tmp_path: Path) -> None:
    from pkg import errors

    (tmp_path / "junk.tar").write_bytes(b"not a tar at all" * 100)
    with pytest.raises(errors.InvalidArgument):
        await core.import_archive(tmp_path / "junk.tar")
    with pytest.raises(errors.NotFound):
        await core.import_archive(tmp_path / "missing.tar")
    layout = tmp_path / "broken"
    mkimage.write_oci_layout(layout, mkimage.build("pause"))
    for blob in (layout / "blobs" / "sha256").iterdir():
        if blob.stat().st_size > 100_000:  # the layer
            blob.write_bytes(blob.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(errors.InvalidArgument):
        await core.import_archive(layout, name="x/broken")
    assert images.snapshots(daemon) == set() and images.leases(daemon) == set()
    assert images.ctr(daemon, "content", "active").splitlines()[1:] == []


async def test_big_multi_layer_pull_is_parallel(core: ImageService, daemon: DaemonProcess,
                                                registry: Registry) -> None:
    built = images.push(registry.host, "big/image", filler_layers=5, filler_mb=20)  # ~100 MiB
    events: list[Progress] = []
    img = await core.pull(f"{registry.host}/big/image", progress=events.append)
    assert img.size > 100 << 20
    assert len(img.diff_ids) == len(built.layers) == 6

    # Layers overlap in flight: some layer made progress while another had started and not finished.
    in_flight: set[str] = set()
    most = 0
    for e in events:
        if e.status == "downloading" and e.current < e.total:
            in_flight.add(e.digest)
        elif e.status == "downloaded":
            in_flight.discard(e.digest)
        most = max(most, len(in_flight))
    assert 2 <= most <= 3  # parallel, and bounded by max-concurrent-downloads (3)
    assert {e.digest for e in events if e.status == "extracted"} == {layer.digest for layer in built.layers}


async def test_tag_moves_and_untag_collects(core: ImageService, daemon: DaemonProcess, tmp_path: Path) -> None:
    first, second = mkimage.build("pause"), mkimage.build("pause", labels={"v": "2"})
    mkimage.write_oci_layout(tmp_path / "one", first, ref_name="1")
    mkimage.write_oci_layout(tmp_path / "two", second, ref_name="2")
    [a] = await core.import_archive(tmp_path / "one", name="local/p")
    [b] = await core.import_archive(tmp_path / "two", name="local/p")
    await core.tag("local/p:1", "local/p:moving")
    assert (await core.get("local/p:moving")).id == a.id
    await core.tag(b.id, "local/p:moving")
    assert (await core.get("local/p:moving")).id == b.id
    assert (await core.get(a.id)).repo_tags == ["docker.io/local/p:1"]
    assert sorted((await core.get(b.id)).repo_tags) == ["docker.io/local/p:2", "docker.io/local/p:moving"]

    assert await core.untag("local/p:moving") is False  # b still has local/p:2
    assert await core.untag("local/p:2") is True  # last name: b is collected
    assert [i.id for i in await core.list()] == [a.id]
    assert images.snapshots(daemon) == {a.chain_id}
    assert b.id not in images.content(daemon)


async def test_pull_for_another_platform(core: ImageService, registry: Registry, tmp_path: Path) -> None:
    per_arch = {"amd64": mkimage.build("busybox", labels={"p": "x"}),
                "arm64": mkimage.build("busybox", arch="arm64", labels={"p": "x"})}
    client = mkimage.RegistryClient(registry.host)
    index_digest = client.push_index("plat/box", "1", per_arch, mkimage.index_of(per_arch))
    img = await core.pull(f"{registry.host}/plat/box:1", platform="linux/arm64")
    assert (img.id, img.architecture) == (per_arch["arm64"].config.digest, "arm64")
    assert img.target.digest == index_digest
    again = await core.get(f"{registry.host}/plat/box:1")
    assert again.id == img.id and again.architecture == "arm64"
    info = await core.inspect(again)
    assert info["manifest"] == per_arch["arm64"].manifest.digest
    await core.export_to([img.id], tmp_path / "arm.tar")
    with tarfile.open(tmp_path / "arm.tar") as tar:
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
    assert index["manifests"][0]["digest"] == per_arch["arm64"].manifest.digest
