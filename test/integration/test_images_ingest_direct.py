"""ingest-direct (pkg.images.ingest_direct) with a real containerd and registry: a blob of 1 MiB or more is
written by narwhald into its ingest's file, hashed as it goes, linked into containerd's store and committed
as content containerd holds; smaller blobs, and every blob with ``ingest-direct: false``, go through
Content.Write.  Counted by narwhal_content_written_bytes_total."""
from __future__ import annotations

import hashlib
import subprocess
import urllib.request
from pathlib import Path

from cri_api.v1 import api_pb2
from lib import images
from lib.daemon import DaemonFactory, DaemonProcess
from lib.registry import Registry
from lib.slowproxy import SlowProxy
from prometheus_client.parser import text_string_to_metric_families

DIRECT_MIN = 1 << 20


def pull(daemon: DaemonProcess, ref: str) -> str:
    req = api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=ref))
    return str(daemon.images().PullImage(req, timeout=120).image_ref)


def written(daemon: DaemonProcess) -> dict[str, float]:
    """narwhal_content_written_bytes_total by ``via``."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{daemon.metrics_port}/metrics", timeout=10).read().decode()
    out = {"ingest": 0.0, "content_write": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "narwhal_content_written_bytes_total":
                out[sample.labels["via"]] = sample.value
    return out


def blob(daemon: DaemonProcess, digest: str) -> bytes:
    sock = daemon.state / "containerd" / "containerd.sock"
    return subprocess.run(["ctr", "-a", str(sock), "-n", "narwhal", "content", "get", digest], check=True,
                          capture_output=True, timeout=60).stdout


def content_root(daemon: DaemonProcess) -> Path:
    return daemon.root / "containerd" / "io.containerd.content.v1.content"


def assert_pulled_whole(daemon: DaemonProcess, built: images.mkimage.Image) -> None:
    """Every blob in containerd's store byte for byte, every layer unpacked, nothing of the pull left (no
    ingest, not even a dir containerd's metadata no longer names)."""
    for b in built.blobs():
        data = blob(daemon, b.digest)
        assert len(data) == len(b.data) and "sha256:" + hashlib.sha256(data).hexdigest() == b.digest
    assert set(images.chain_ids(built.diff_ids)) <= images.snapshots(daemon)
    assert images.ctr(daemon, "content", "active").splitlines()[1:] == []
    assert list((content_root(daemon) / "ingest").iterdir()) == []
    assert images.leases(daemon) == set()


def test_big_blobs_go_into_the_ingest_file_small_ones_through_content_write(daemon: DaemonProcess,
                                                                           registry: Registry) -> None:
    built = images.push(registry.host, "direct/big", filler_layers=2, filler_mb=3)
    big = [b for b in built.blobs() if len(b.data) >= DIRECT_MIN]
    small = [b for b in built.blobs() if len(b.data) < DIRECT_MIN]
    assert len(big) == 2 and small, "the image should have blobs on both sides of the limit"
    before = written(daemon)
    assert pull(daemon, f"{registry.host}/direct/big") == built.config.digest
    after = written(daemon)
    assert after["ingest"] - before["ingest"] == sum(len(b.data) for b in big)
    assert after["content_write"] - before["content_write"] == sum(len(b.data) for b in small)
    assert_pulled_whole(daemon, built)


def test_a_cut_stream_resumes_in_the_ingest_file_without_writing_a_byte_twice(daemon: DaemonProcess,
                                                                             registry: Registry) -> None:
    built = images.push(registry.host, "direct/cut", filler_layers=1, filler_mb=6)
    [layer] = [b for b in built.blobs() if len(b.data) >= DIRECT_MIN]
    # Each of the first two connections that carry 2 MiB is cut there: the layer arrives in three pieces, the
    # second and third appended to what the data file holds (a registry Range request from containerd's offset).
    proxy = SlowProxy(("127.0.0.1", registry.port), bytes_per_second=64 << 20, cut_after=2 << 20, cuts=2).start()
    try:
        before = written(daemon)
        assert pull(daemon, f"{proxy.host}/direct/cut") == built.config.digest
        assert proxy.cuts == 0
        after = written(daemon)
    finally:
        proxy.stop()
    assert "resuming at byte" in daemon.log()
    assert after["ingest"] - before["ingest"] == len(layer.data)
    assert_pulled_whole(daemon, built)


def test_ingest_direct_false_writes_every_byte_through_content_write(daemon_factory: DaemonFactory,
                                                                     registry: Registry) -> None:
    built = images.push(registry.host, "direct/off", filler_layers=1, filler_mb=3)
    daemon: DaemonProcess = daemon_factory(extra_args=["--ingest-direct", "false"])
    before = written(daemon)
    assert pull(daemon, f"{registry.host}/direct/off") == built.config.digest
    after = written(daemon)
    assert after["ingest"] - before["ingest"] == 0
    assert after["content_write"] - before["content_write"] == sum(len(b.data) for b in built.blobs())
    assert_pulled_whole(daemon, built)


def test_a_blob_in_the_store_that_no_namespace_names_is_committed_without_a_byte_fetched(
        daemon: DaemonProcess, registry: Registry) -> None:
    """What the fast path relies on: containerd's metadata store commits a write that names a blob its backend
    holds without reading it (the "shared" content policy).  Here the blob is what a narwhald killed between
    its link and its commit would leave: in the store's blobs dir, named by no namespace."""
    built = images.push(registry.host, "direct/planted", filler_layers=1, filler_mb=3)
    [layer] = [b for b in built.blobs() if len(b.data) >= DIRECT_MIN]
    planted = content_root(daemon) / "blobs" / "sha256" / layer.digest.split(":")[1]
    assert not planted.exists()
    planted.parent.mkdir(parents=True, exist_ok=True)
    planted.write_bytes(layer.data)
    before = written(daemon)
    assert pull(daemon, f"{registry.host}/direct/planted") == built.config.digest
    after = written(daemon)
    assert after["ingest"] - before["ingest"] == 0  # not a byte of it fetched or written
    assert after["content_write"] - before["content_write"] == sum(len(b.data) for b in built.blobs()
                                                                   if b is not layer)
    assert_pulled_whole(daemon, built)
