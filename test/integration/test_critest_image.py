"""critest "Image Consistency", "Image Identifier Consistency" and "Image Volume [Feature:ImageVolume]"
(cri-tools pkg/validate/image_consistency.go, image_id_consistency.go, image_volume.go), ported.

critest's "Image Manager" specs (image.go) and the simultaneous-RemoveImage and two-registries specs are
ported in test_images_cri_specs.py (a registry.k8s.io mirror serves their images).  critest's test image
(gcr.io/k8s-staging-cri-tools/test-image-tag:test) is our busybox under that repository name here.
"""
from __future__ import annotations

import grpc
import pytest
from cri_api.v1 import api_pb2
from lib import cri
from lib.critest import PAUSE_CMD, Crit, crit_daemon_fixture, crit_fixture  # noqa: F401
from lib.registry import Registry


@pytest.fixture
def test_image(crit: Crit, registry: Registry) -> str:
    """testImageWithTag, absent before the spec (critest's removeImage first)."""
    ref = cri.push_busybox(registry, "critest/test-image-tag", "test")
    _remove(crit, ref)
    return ref


def _status(crit: Crit, ref: str) -> api_pb2.Image | None:
    resp = crit.daemon.images().ImageStatus(api_pb2.ImageStatusRequest(image=api_pb2.ImageSpec(image=ref)),
                                            timeout=30)
    return resp.image if resp.HasField("image") else None


def _remove(crit: Crit, ref: str) -> None:
    """critest's removeImage: ImageStatus, then RemoveImage by ID."""
    image = _status(crit, ref)
    if image is not None:
        crit.daemon.images().RemoveImage(api_pb2.RemoveImageRequest(image=api_pb2.ImageSpec(image=image.id)),
                                         timeout=60)


def _listed(crit: Crit, ref: str) -> bool:
    images = crit.daemon.images().ListImages(api_pb2.ListImagesRequest(filter=api_pb2.ImageFilter()), timeout=30)
    return any(ref in img.repo_tags for img in images.images)


def test_should_not_list_or_get_image_status_immediately_after_removal(crit: Crit, test_image: str) -> None:
    """critest: Image Consistency should not list or get image status immediately after removal [Conformance]."""
    cri.pull(crit.daemon.images(), test_image)
    _remove(crit, test_image)
    assert not _listed(crit, test_image)
    assert _status(crit, test_image) is None


def test_should_list_and_get_image_status_immediately_after_pulling(crit: Crit, test_image: str) -> None:
    """critest: Image Consistency should list and get image status immediately after pulling [Conformance]."""
    cri.pull(crit.daemon.images(), test_image)
    try:
        assert _listed(crit, test_image)
        assert _status(crit, test_image) is not None
    finally:
        _remove(crit, test_image)


def test_should_return_the_same_image_identifier_across_all_apis(crit: Crit, test_image: str) -> None:
    """critest: Image Identifier Consistency should return the same image identifier across all APIs
    [Conformance] (PullImageResponse.image_ref = Image.id = ContainerStatus.image_id = Container.image_id)."""
    image_ref = cri.pull(crit.daemon.images(), test_image)
    assert image_ref
    try:
        image = _status(crit, test_image)
        assert image is not None and image.id == image_ref
        pod_id, pod_config = crit.pod_for_container()
        config = crit.container_config("id-consistency-", [], image=image_ref)
        config.image.user_specified_image = test_image
        cid = crit.create(pod_id, pod_config, config)
        crit.start(cid)
        assert crit.status(cid).status.image_id == image_ref
        containers = crit.list_containers(id=cid)
        assert len(containers) == 1 and containers[0].image_id == image_ref
        crit.remove_pod(pod_id)
    finally:
        _remove(crit, test_image)


def _image_volume_config(crit: Crit, image_ref: str, user_image: str, readonly: bool = True,
                         sub_path: str = "") -> api_pb2.ContainerConfig:
    config = crit.container_config("image-volume-test-", PAUSE_CMD, image=image_ref)
    config.image.user_specified_image = user_image
    config.mounts.append(api_pb2.Mount(container_path="/mnt/image-volume", readonly=readonly, image_sub_path=sub_path,
                                       image=api_pb2.ImageSpec(image=image_ref, user_specified_image=user_image)))
    return config


@pytest.mark.parametrize(("readonly", "sub_path"), [(True, ""), (False, ""), (True, "etc"), (True, "not-existing")],
                         ids=["digest-in-status", "readonly-false", "valid-subpath", "missing-subpath"])
def test_image_volume(crit: Crit, test_image: str, readonly: bool, sub_path: str) -> None:
    """critest: Image Volume should return image digest in ContainerStatus mounts / should correctly mount image
    and enforce read-only / should reject Image Volume with Readonly set to false / subPath should succeed when
    using a valid subPath / should fail when subPath does not exist in the image. Each skips when CreateContainer
    answers UNIMPLEMENTED, as narwhald does (no image volumes)."""
    image_ref = cri.pull(crit.daemon.images(), test_image)
    try:
        pod_id, pod_config = crit.pod_for_container()
        code = cri.code_of(lambda: crit.create(pod_id, pod_config,
                                               _image_volume_config(crit, image_ref, test_image, readonly, sub_path)))
        if code == grpc.StatusCode.UNIMPLEMENTED:
            pytest.skip("Image Volumes are not yet supported by the runtime (Unimplemented).")
        pytest.fail(f"CreateContainer with an image volume answered {code}: narwhald now has image volumes, "
                    "port the rest of these specs")
    finally:
        _remove(crit, test_image)
