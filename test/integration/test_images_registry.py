"""Pulls through mirrors, with basic and token auth, and the failure cases: bad blobs, dead registries, kill -9."""
from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator

import grpc
import pytest
from cri_api.v1 import api_pb2
from lib import images
from lib.daemon import DaemonFactory, DaemonProcess, free_port
from lib.registry import Registry, start_registry
from lib.slowproxy import SlowProxy
from lib.token_auth import start_token_registry


def pull(daemon: DaemonProcess, ref: str, auth: api_pb2.AuthConfig | None = None, timeout: float = 120) -> str:
    req = api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=ref), auth=auth)
    return str(daemon.images().PullImage(req, timeout=timeout).image_ref)


def pull_error(daemon: DaemonProcess, ref: str, auth: api_pb2.AuthConfig | None = None) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        pull(daemon, ref, auth)
    return err.value


def assert_nothing_left(daemon: DaemonProcess) -> None:
    assert images.leases(daemon) == set()
    assert images.snapshots(daemon) == set()
    assert images.content(daemon) == set()
    assert images.ctr(daemon, "content", "active").splitlines()[1:] == []


@pytest.fixture
def private_registry() -> Iterator[Registry]:
    reg = start_registry()
    yield reg
    reg.stop()


def test_mirrors_tried_in_order(daemon_factory: DaemonFactory, registry: Registry) -> None:
    built = images.push(registry.host, "library/busybox", "mirrored")
    dead = f"http://127.0.0.1:{free_port()}"
    config = f'registry:\n  mirrors:\n    docker.io: ["{dead}", "http://{registry.host}"]\n'
    daemon: DaemonProcess = daemon_factory(config_yaml=config)
    assert pull(daemon, "busybox:mirrored") == built.config.digest
    img = daemon.images().ImageStatus(api_pb2.ImageStatusRequest(image=api_pb2.ImageSpec(image="busybox:mirrored")))
    assert list(img.image.repo_tags) == ["docker.io/library/busybox:mirrored"]
    assert list(img.image.repo_digests) == [f"docker.io/library/busybox@{built.manifest.digest}"]
    # A tag no mirror has: NotFound (the upstream, docker.io, is unreachable offline: still an error, never a hang).
    err = pull_error(daemon, "busybox:absent-everywhere")
    assert err.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE), err.details()


def test_basic_auth(daemon: DaemonProcess) -> None:
    reg = start_registry(users={"alice": "s3cret"})
    try:
        built = images.push(reg.host, "private/box", username="alice", password="s3cret")
        ref = f"{reg.host}/private/box"
        assert pull_error(daemon, ref).code() == grpc.StatusCode.UNAUTHENTICATED
        wrong = api_pb2.AuthConfig(username="alice", password="wrong")
        assert pull_error(daemon, ref, wrong).code() == grpc.StatusCode.UNAUTHENTICATED
        assert pull(daemon, ref, api_pb2.AuthConfig(username="alice", password="s3cret")) == built.config.digest
        daemon.images().RemoveImage(api_pb2.RemoveImageRequest(image=api_pb2.ImageSpec(image=ref)))
        encoded = base64.b64encode(b"alice:s3cret").decode()
        assert pull(daemon, ref, api_pb2.AuthConfig(auth=encoded)) == built.config.digest
    finally:
        reg.stop()


def test_token_auth(daemon: DaemonProcess, private_registry: Registry) -> None:
    built = images.push(private_registry.host, "team/app", "v1")
    token_reg = start_token_registry({"bob": "hunter2"}, private_registry.base / "data")
    try:
        ref = f"{token_reg.host}/team/app:v1"
        anonymous = pull_error(daemon, ref)
        assert anonymous.code() == grpc.StatusCode.UNAUTHENTICATED, anonymous.details()
        bad = pull_error(daemon, ref, api_pb2.AuthConfig(username="bob", password="nope"))
        assert bad.code() == grpc.StatusCode.UNAUTHENTICATED, bad.details()
        assert pull(daemon, ref, api_pb2.AuthConfig(username="bob", password="hunter2")) == built.config.digest
        granted = [c for c in token_reg.tokens.issued if c["sub"] == "bob"]
        assert granted and granted[-1]["access"] == [{"type": "repository", "name": "team/app", "actions": ["pull"]}]
    finally:
        token_reg.stop()


def test_corrupt_blob_leaves_nothing(daemon: DaemonProcess, private_registry: Registry) -> None:
    built = images.push(private_registry.host, "bad/blob", filler_layers=1, filler_mb=1)
    blob = images.registry_blob_path(private_registry.base, built.layers[1].digest)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different digest
    blob.write_bytes(bytes(data))
    err = pull_error(daemon, f"{private_registry.host}/bad/blob")
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert built.layers[1].digest in err.details()
    assert daemon.images().ListImages(api_pb2.ListImagesRequest()).images == []
    assert_nothing_left(daemon)


def test_unreachable_registry_is_unavailable(daemon: DaemonProcess) -> None:
    err = pull_error(daemon, f"127.0.0.1:{free_port()}/some/image:1")
    assert err.code() == grpc.StatusCode.UNAVAILABLE, err.details()
    assert_nothing_left(daemon)


def test_kill9_mid_pull_then_retry(daemon: DaemonProcess, private_registry: Registry) -> None:
    """narwhald killed while a layer is being unpacked and the next one is part-written: after the restart the
    cut unpack is gone and the partial blob is kept; the retry resumes it, and then nothing of the
    interrupted pull is left (no extract- snapshot, no ingest, no lease)."""
    built = images.slow_unpack_image(files=KILL9_FILES, filler_mb=12)
    images.push_built(private_registry.host, "big/slow", "latest", built)
    chains = images.chain_ids(built.diff_ids)
    proxy = SlowProxy(("127.0.0.1", private_registry.port), bytes_per_second=2 << 20).start()
    try:
        ref = f"{proxy.host}/big/slow"
        result: dict[str, object] = {}

        def background() -> None:
            try:
                result["id"] = pull(daemon, ref)
            except grpc.RpcError as exc:
                result["error"] = exc

        thread = threading.Thread(target=background, daemon=True)
        thread.start()
        cut = _wait_for_unpack(daemon, chains[1], built.layers[1].digest)  # many files: seconds of unpacking
        daemon.kill9()
        thread.join(30)
        assert "id" not in result
        # containerd outlives narwhald: what the killed pull left is still there.
        assert cut in {key for key, _ in images.unpacks(daemon)}, "the kill came after that unpack finished"
        assert _pull_ingests(daemon), "the third layer should have been part-written when narwhald was killed"

        daemon.start()
        # The restart removed the cut unpack; the partial blob survived (a stale lease holds it) for the retry.
        assert images.unpacks(daemon) == []
        assert _pull_ingests(daemon), "the interrupted ingest should still be there to resume"
        proxy.bytes_per_second = 64 << 20
        assert pull(daemon, ref) == built.config.digest
        assert images.snapshots(daemon) == set(chains)
        assert images.ctr(daemon, "content", "active").splitlines()[1:] == []
        assert images.leases(daemon) == set()
        for layer in built.layers:
            assert layer.digest in images.content(daemon)
    finally:
        proxy.stop()


KILL9_FILES = 40000  # a layer whose unpack takes seconds, so the kill lands inside it


def _pull_ingests(daemon: DaemonProcess) -> list[str]:
    rows = images.ctr(daemon, "content", "active").splitlines()[1:]
    return [row.split()[0] for row in rows if row.split()[0].startswith("narwhal-pull-")]


def _wait_for_unpack(daemon: DaemonProcess, chain: str, blob: str, timeout: float = 60) -> str:
    """The key of the active snapshot ``chain`` is being unpacked into, as soon as the unpack runs: the snapshot
    exists (a pull prepares it while the layer is still coming in) and the layer's blob is in."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for key, target in images.unpacks(daemon):
            if target == chain and blob in images.content(daemon):
                return key
        time.sleep(0.02)
    raise AssertionError(f"the pull never started unpacking {chain}")


def test_insecure_registry_over_self_signed_https(daemon_factory: DaemonFactory, private_registry: Registry) -> None:
    from lib.tls_registry import start_tls_registry

    built = images.push(private_registry.host, "tls/box", "1")
    tls = start_tls_registry(private_registry.base / "data")
    try:
        ref = f"{tls.host}/tls/box:1"
        plain: DaemonProcess = daemon_factory()
        # Not listed as insecure: a loopback host is spoken to in plain HTTP, which a TLS server refuses.
        refused = pull_error(plain, ref)
        assert "HTTPS server" in refused.details(), refused.details()  # Go's own answer, passed on
        trusting: DaemonProcess = daemon_factory(
            config_yaml=f'registry:\n  insecure: ["{tls.host}"]\n')
        assert pull(trusting, ref) == built.config.digest
    finally:
        tls.stop()


def test_cut_blob_streams_resume_within_the_pull(daemon: DaemonProcess, private_registry: Registry) -> None:
    built = images.push(private_registry.host, "flaky/net", filler_layers=1, filler_mb=6)
    # Each of the first two connections that carry 2 MiB is cut there: the layer arrives in pieces.
    proxy = SlowProxy(("127.0.0.1", private_registry.port), bytes_per_second=64 << 20,
                      cut_after=2 << 20, cuts=2).start()
    try:
        assert pull(daemon, f"{proxy.host}/flaky/net") == built.config.digest
        assert proxy.cuts == 0  # both cuts happened, and the pull still completed
        assert "resuming at byte" in daemon.log()
    finally:
        proxy.stop()
