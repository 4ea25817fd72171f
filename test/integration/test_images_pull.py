"""CRI ImageService against a real narwhald, containerd and registry: pull, list, status, remove, GC."""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import grpc
import mkimage
import pytest
from cri_api.v1 import api_pb2
from lib import images
from lib.daemon import DaemonProcess
from lib.leaks import leftovers
from lib.registry import Registry


def spec(ref: str) -> api_pb2.ImageSpec:
    return api_pb2.ImageSpec(image=ref)


def pull(daemon: DaemonProcess, ref: str, **kw: object) -> str:
    return str(daemon.images().PullImage(api_pb2.PullImageRequest(image=spec(ref), **kw), timeout=120).image_ref)


def status(daemon: DaemonProcess, ref: str, verbose: bool = False) -> api_pb2.ImageStatusResponse:
    return daemon.images().ImageStatus(api_pb2.ImageStatusRequest(image=spec(ref), verbose=verbose), timeout=30)


def test_pull_by_tag_unpacks_lists_and_removes(daemon: DaemonProcess, registry: Registry) -> None:
    built = images.push(registry.host, "library/busybox", "p1")
    ref = f"{registry.host}/library/busybox:p1"
    image_id = pull(daemon, ref)
    assert image_id == built.config.digest  # the image ID is the config digest

    # Unpacked: the top layer's chain ID is a committed snapshot; the pull's lease is gone.
    assert built.diff_ids[0] in images.snapshots(daemon)
    assert images.leases(daemon) == set()
    assert {built.manifest.digest, built.config.digest, built.layers[0].digest} <= images.content(daemon)

    listed = daemon.images().ListImages(api_pb2.ListImagesRequest(), timeout=30).images
    [img] = [i for i in listed if i.id == image_id]
    assert list(img.repo_tags) == [ref]
    assert list(img.repo_digests) == [f"{registry.host}/library/busybox@{built.manifest.digest}"]
    assert img.size == len(built.config.data) + sum(len(layer.data) for layer in built.layers)

    # Every way an operator names it resolves to the same image.
    by_digest = f"{registry.host}/library/busybox@{built.manifest.digest}"
    for name in (ref, image_id, image_id[7:], image_id[7:19], by_digest):
        assert status(daemon, name).image.id == image_id, name
    verbose = status(daemon, ref, verbose=True)
    info = json.loads(verbose.info["info"])
    assert info["imageSpec"]["rootfs"]["diff_ids"] == built.diff_ids
    assert info["chainID"] == built.diff_ids[0]

    # Absent image: no image and no error (api.proto).
    assert not status(daemon, f"{registry.host}/library/nothing:here").HasField("image")

    # Filter by repository (any tag), by full reference, and a miss.
    def filtered(f: str) -> list[str]:
        req = api_pb2.ListImagesRequest(filter=api_pb2.ImageFilter(image=spec(f)))
        return [i.id for i in daemon.images().ListImages(req, timeout=30).images]

    assert filtered(f"{registry.host}/library/busybox") == [image_id]
    assert filtered(ref) == [image_id]
    assert filtered(f"{registry.host}/library/busybox:other") == []

    # Remove the last reference: content and snapshots are freed; removing again succeeds.
    daemon.images().RemoveImage(api_pb2.RemoveImageRequest(image=spec(ref)), timeout=60)
    assert not status(daemon, image_id).HasField("image")
    assert images.snapshots(daemon) == set()
    assert images.content(daemon) == set()
    daemon.images().RemoveImage(api_pb2.RemoveImageRequest(image=spec(ref)), timeout=60)
    daemon.images().RemoveImage(api_pb2.RemoveImageRequest(image=spec(image_id)), timeout=60)


def test_pull_by_digest_index_and_docker_media(daemon: DaemonProcess, registry: Registry) -> None:
    # A Docker manifest list with amd64 and arm64: the host's platform is chosen; pulled by digest.
    client = mkimage.RegistryClient(registry.host)
    per_arch = {"amd64": mkimage.build("busybox", docker_media=True, labels={"v": "idx"}),
                "arm64": mkimage.build("busybox", docker_media=True, arch="arm64", labels={"v": "idx"})}
    index = mkimage.index_of(per_arch, docker_media=True)
    digest = client.push_index("multi/box", "v1", per_arch, index)
    ref = f"{registry.host}/multi/box@{digest}"
    image_id = pull(daemon, ref)
    assert image_id == per_arch["amd64"].config.digest
    img = status(daemon, ref).image
    assert list(img.repo_tags) == []
    assert list(img.repo_digests) == [ref]
    # The arm64 config was never fetched.
    assert per_arch["arm64"].config.digest not in images.content(daemon)
    # Pulling the same image by tag adds a name, shares everything.
    assert pull(daemon, f"{registry.host}/multi/box:v1") == image_id
    assert list(status(daemon, ref).image.repo_tags) == [f"{registry.host}/multi/box:v1"]
    daemon.images().RemoveImage(api_pb2.RemoveImageRequest(image=spec(image_id[7:19])), timeout=60)
    assert images.content(daemon) == set()


def test_multi_layer_shared_layers_and_image_fs(daemon: DaemonProcess, registry: Registry) -> None:
    base = images.push(registry.host, "layers/a", filler_layers=2, filler_mb=1)
    other = images.push(registry.host, "layers/b", filler_layers=3, filler_mb=1)
    id_a = pull(daemon, f"{registry.host}/layers/a")
    id_b = pull(daemon, f"{registry.host}/layers/b")
    snaps = images.snapshots(daemon)
    chains_a = _chains(base.diff_ids)
    chains_b = _chains(other.diff_ids)
    assert set(chains_a) | set(chains_b) == snaps  # the first three layers are shared, not duplicated

    fs = daemon.images().ImageFsInfo(api_pb2.ImageFsInfoRequest(), timeout=30).image_filesystems
    assert fs[0].fs_id.mountpoint.endswith("io.containerd.snapshotter.v1.overlayfs")
    assert fs[0].used_bytes.value > 4 << 20 and fs[0].inodes_used.value > 0 and fs[0].timestamp > 0

    daemon.images().RemoveImage(api_pb2.RemoveImageRequest(image=spec(id_b)), timeout=60)
    assert images.snapshots(daemon) == set(chains_a)  # b's own layer went; the shared ones stay
    daemon.images().RemoveImage(api_pb2.RemoveImageRequest(image=spec(id_a)), timeout=60)
    assert images.snapshots(daemon) == set()


def test_concurrent_pulls_of_one_image_share_the_work(daemon: DaemonProcess, registry: Registry) -> None:
    built = images.push(registry.host, "same/twice", filler_layers=3, filler_mb=4)
    ref = f"{registry.host}/same/twice"
    with ThreadPoolExecutor(3) as pool:
        ids = list(pool.map(lambda _: pull(daemon, ref), range(3)))
    assert ids == [built.config.digest] * 3
    assert images.snapshots(daemon) == set(_chains(built.diff_ids))
    assert images.leases(daemon) == set()
    assert images.ctr(daemon, "content", "active").splitlines()[1:] == []


def _chains(diff_ids: list[str]) -> list[str]:
    from pkg.images.unpack import chain_ids

    return chain_ids(diff_ids)


def test_pull_bad_input(daemon: DaemonProcess, registry: Registry) -> None:
    images.push(registry.host, "library/busybox", "latest")
    cases = [("Not A Ref", grpc.StatusCode.INVALID_ARGUMENT), ("busybox@sha256:123", grpc.StatusCode.INVALID_ARGUMENT),
             (f"{registry.host}/nobody/here:latest", grpc.StatusCode.NOT_FOUND),
             (f"{registry.host}/library/busybox:no-such-tag", grpc.StatusCode.NOT_FOUND)]
    for ref, code in cases:
        with pytest.raises(grpc.RpcError) as err:
            pull(daemon, ref)
        assert err.value.code() == code, (ref, err.value.details())
        if code == grpc.StatusCode.NOT_FOUND:
            assert "unknown" in err.value.details()  # the registry's own message
    assert images.leases(daemon) == set() and images.snapshots(daemon) == set()


@pytest.mark.parametrize("kind", list(images.IMAGE_KINDS))
def test_cri_pull_of_every_image_kind(daemon: DaemonProcess, registry: Registry, kind: str) -> None:
    """CRI pulls OCI and Docker schema 2 images with gzip or plain tar layers alike (the Docker paths:
    test_docker_image_kinds.py): unpacked, listed with their digest, removed without a trace."""
    built = images.push_kind(registry.host, f"kinds/{kind}", kind)
    ref = f"{registry.host}/kinds/{kind}:latest"
    assert pull(daemon, ref) == built.config.digest
    assert built.diff_ids[0] in images.snapshots(daemon)
    img = status(daemon, ref).image
    assert list(img.repo_digests) == [f"{registry.host}/kinds/{kind}@{built.manifest.digest}"]
    assert img.size > 0
    daemon.images().RemoveImage(api_pb2.RemoveImageRequest(image=spec(ref)), timeout=60)
    assert images.content(daemon) == set() and images.snapshots(daemon) == set()


@pytest.mark.parametrize("config", ["beside", "after the layers"])
def test_layers_stream_in_beside_the_config(daemon: DaemonProcess, registry: Registry, config: str) -> None:
    """A pull asks for its layers without waiting for the config (which only names their diff IDs, needed at
    each layer's commit and unpack): the relay holds the config back until a layer is asked for, or until every
    layer blob is committed (their labels are then set after their commit)."""
    from lib.gateproxy import GateProxy

    built = images.push(registry.host, "order/beside", filler_layers=2, filler_mb=1)
    layers = {layer.digest for layer in built.layers}
    until = (lambda: layers <= images.content(daemon)) if config == "after the layers" else None
    proxy = GateProxy(("127.0.0.1", registry.port), held=built.config.digest, until=until).start()
    try:
        assert pull(daemon, f"{proxy.host}/order/beside") == built.config.digest
        assert proxy.others_first
        assert proxy.released_by_until == (until is not None)
    finally:
        proxy.stop()
    assert images.content(daemon) >= {built.config.digest, *(layer.digest for layer in built.layers)}
    labels = images.ctr(daemon, "content", "ls")
    for layer, diff_id in zip(built.layers, built.diff_ids, strict=True):
        line = next(row for row in labels.splitlines() if row.startswith(layer.digest))
        assert f"containerd.io/uncompressed={diff_id}" in line  # labelled at its commit, config known by then
    daemon.images().RemoveImage(api_pb2.RemoveImageRequest(image=spec(built.config.digest)), timeout=60)
    assert images.leases(daemon) == set() and images.snapshots(daemon) == set()
    assert images.ctr(daemon, "content", "active").splitlines()[1:] == []
    assert leftovers(daemon) == {}
