"""The cri-tools (critest) image specs, ported: test images served through a registry.k8s.io mirror."""
from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import mkimage
import pytest
from cri_api.v1 import api_pb2
from lib import images
from lib.daemon import DaemonFactory, DaemonProcess
from lib.registry import Registry

UPSTREAM = "registry.k8s.io/e2e-test-images"


@pytest.fixture
def mirrored(daemon_factory: DaemonFactory, registry: Registry) -> DaemonProcess:
    config = f'registry:\n  mirrors:\n    registry.k8s.io: ["http://{registry.host}"]\n'
    return daemon_factory(config_yaml=config)


def spec(ref: str) -> api_pb2.ImageSpec:
    return api_pb2.ImageSpec(image=ref)


def pull(d: DaemonProcess, ref: str) -> str:
    return str(d.images().PullImage(api_pb2.PullImageRequest(image=spec(ref)), timeout=120).image_ref)


def status(d: DaemonProcess, ref: str) -> api_pb2.Image | None:
    resp = d.images().ImageStatus(api_pb2.ImageStatusRequest(image=spec(ref)), timeout=30)
    return resp.image if resp.HasField("image") else None


def remove_via_status(d: DaemonProcess, ref: str) -> None:
    """critest's removeImage: ImageStatus, then RemoveImage by ID; afterwards the status is empty."""
    img = status(d, ref)
    if img is not None:
        d.images().RemoveImage(api_pb2.RemoveImageRequest(image=spec(img.id)), timeout=60)
    assert status(d, ref) is None


def test_pull_with_tag_without_tag_and_with_digest(mirrored: DaemonProcess, registry: Registry) -> None:
    built = images.push(registry.host, "e2e-test-images/busybox", "1.29-2")
    images.push(registry.host, "e2e-test-images/busybox", "latest")
    tagged = f"{UPSTREAM}/busybox:1.29-2"
    pull(mirrored, tagged)
    img = status(mirrored, tagged)
    assert img is not None and img.id and img.size > 0
    assert list(img.repo_tags) == [tagged]
    remove_via_status(mirrored, tagged)

    pull(mirrored, f"{UPSTREAM}/busybox")
    img = status(mirrored, f"{UPSTREAM}/busybox")
    assert img is not None and list(img.repo_tags) == [f"{UPSTREAM}/busybox:latest"]
    remove_via_status(mirrored, f"{UPSTREAM}/busybox")

    digested = f"{UPSTREAM}/busybox@{built.manifest.digest}"
    pull(mirrored, digested)
    img = status(mirrored, digested)
    assert img is not None and list(img.repo_tags) == [] and list(img.repo_digests) == [digested]
    remove_via_status(mirrored, digested)


def test_status_supports_all_kinds_of_references(mirrored: DaemonProcess, registry: Registry) -> None:
    built = images.push(registry.host, "e2e-test-images/busybox", "1.29-2")
    ref = f"{UPSTREAM}/busybox:1.29-2@{built.manifest.digest}"
    pull(mirrored, ref)
    img = status(mirrored, ref)
    assert img is not None
    assert status(mirrored, img.id) == img
    for name in [*img.repo_tags, *img.repo_digests]:
        assert status(mirrored, name) == img, name
    remove_via_status(mirrored, ref)


def test_uid_and_username_from_image_user(mirrored: DaemonProcess, registry: Registry) -> None:
    base = mkimage.build("busybox")
    cases = [("uid", "1002", 1002, ""), ("name", "gopher", 0, "gopher"),
             ("uidgroup", "1003:users", 1003, ""), ("namegroup", "gopher:users", 0, "gopher")]
    for tag, user, uid, username in cases:
        images.push_built(registry.host, "e2e-test-images/user", tag, images.with_user(base, user))
        ref = f"{UPSTREAM}/user:{tag}"
        pull(mirrored, ref)
        img = status(mirrored, ref)
        assert img is not None
        assert (img.uid.value, img.username) == (uid, username), tag
        assert img.HasField("uid") == bool(uid), tag


def test_list_three_images_and_three_tags_of_one(mirrored: DaemonProcess, registry: Registry) -> None:
    base = mkimage.build("busybox")
    different = [f"{UPSTREAM}/diff:{t}" for t in ("a", "b", "c")]
    for t, user in zip(("a", "b", "c"), ("1", "2", "3"), strict=True):
        images.push_built(registry.host, "e2e-test-images/diff", t, images.with_user(base, user))
    ids = [pull(mirrored, ref) for ref in different]
    assert len(set(ids)) == 3
    listed = {i.id: i for i in mirrored.images().ListImages(api_pb2.ListImagesRequest(), timeout=30).images}
    for image_id, ref in zip(ids, different, strict=True):
        assert list(listed[image_id].repo_tags) == [ref]

    same = [f"{UPSTREAM}/same:{t}" for t in ("x", "y", "z")]
    for t in ("x", "y", "z"):
        images.push_built(registry.host, "e2e-test-images/same", t, base)
    same_ids = {pull(mirrored, ref) for ref in same}
    assert len(same_ids) == 1
    listed = {i.id: i for i in mirrored.images().ListImages(api_pb2.ListImagesRequest(), timeout=30).images}
    assert sorted(listed[same_ids.pop()].repo_tags) == sorted(same)
    for ref in [*different, *same]:
        remove_via_status(mirrored, ref)


def test_pull_deadline_exceeded_leaves_nothing(mirrored: DaemonProcess, registry: Registry) -> None:
    images.push(registry.host, "e2e-test-images/slow", filler_layers=1, filler_mb=8)
    with pytest.raises(grpc.RpcError) as err:
        mirrored.images().PullImage(api_pb2.PullImageRequest(image=spec(f"{UPSTREAM}/slow")), timeout=0.001)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # The cancelled pull cleans up after itself: its lease goes, so nothing is pinned.
    deadline = time.monotonic() + 30
    while images.leases(mirrored) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert images.leases(mirrored) == set()
    # Whatever moment the cancellation hit, nothing is half there: either no image and nothing left,
    # or (cancelled only after naming it) the whole image with its unpacked snapshot.
    img = status(mirrored, f"{UPSTREAM}/slow")
    if img is None:
        assert images.snapshots(mirrored) == set() and images.content(mirrored) == set()
    else:
        info = mirrored.images().ImageStatus(api_pb2.ImageStatusRequest(image=spec(img.id), verbose=True))
        assert json.loads(info.info["info"])["chainID"] in images.snapshots(mirrored)
    assert images.ctr(mirrored, "content", "active").splitlines()[1:] == []


def test_same_image_from_two_registries_has_one_id(mirrored: DaemonProcess, registry: Registry) -> None:
    base = mkimage.build("busybox", labels={"spec": "id-consistency"})
    images.push_built(registry.host, "e2e-test-images/consistent", "1", base)
    via_mirror, direct = f"{UPSTREAM}/consistent:1", f"{registry.host}/e2e-test-images/consistent:1"
    first, second = pull(mirrored, via_mirror), pull(mirrored, direct)
    assert first == second == base.config.digest
    assert status(mirrored, via_mirror) == status(mirrored, direct)
    assert sorted(status(mirrored, first).repo_tags) == sorted([via_mirror, direct])  # type: ignore[union-attr]


def test_simultaneous_removes_all_succeed(mirrored: DaemonProcess, registry: Registry) -> None:
    images.push(registry.host, "e2e-test-images/busybox", "1.29-2")
    ref = f"{UPSTREAM}/busybox:1.29-2"
    image_id = pull(mirrored, ref)

    def remove_then_status(_: int) -> bool:
        mirrored.images().RemoveImage(api_pb2.RemoveImageRequest(image=spec(image_id)), timeout=60)
        return status(mirrored, image_id) is None

    with ThreadPoolExecutor(5) as pool:
        assert all(pool.map(remove_then_status, range(5)))
    listed = mirrored.images().ListImages(api_pb2.ListImagesRequest(), timeout=30).images
    assert all(ref not in i.repo_tags for i in listed)
