"""The test image builder is reproducible and produces well-formed OCI images."""
import gzip
import io
import json
import tarfile

import mkimage


def test_busybox_is_reproducible_and_complete() -> None:
    a = mkimage.build("busybox")
    b = mkimage.build("busybox")
    assert a.manifest.digest == b.manifest.digest
    manifest = json.loads(a.manifest.data)
    assert manifest["config"]["digest"] == a.config.digest
    config = json.loads(a.config.data)
    assert config["rootfs"]["diff_ids"] == a.diff_ids
    names = tarfile.open(fileobj=io.BytesIO(gzip.decompress(a.layers[0].data))).getnames()
    assert "bin/busybox" in names and "bin/sh" in names and "etc/passwd" in names


def test_pause_runs_catatonit_pause_mode() -> None:
    image = mkimage.build("pause")
    config = json.loads(image.config.data)
    assert config["config"]["Entrypoint"] == ["/catatonit", "-P"]


def test_filler_layers_and_docker_media() -> None:
    image = mkimage.build("busybox", docker_media=True, filler_layers=2, filler_mb=1)
    assert len(image.layers) == 3
    assert all(layer.media_type == mkimage.DOCKER_LAYER_GZIP for layer in image.layers)
    assert image.layers[1].digest != image.layers[2].digest
    assert len(image.layers[1].data) > 1 << 20
