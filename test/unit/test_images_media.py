"""Manifest/index parsing, platform selection, chain IDs, the auth challenge parser, registry endpoints."""
import hashlib
import json

import pytest

from pkg import errors
from pkg.config import RegistryConfig
from pkg.images import media
from pkg.images.auth import parse_challenges
from pkg.images.registry import endpoints, registry_error
from pkg.images.unpack import chain_ids


def _entry(arch: str, variant: str = "", os: str = "linux") -> dict[str, object]:
    digest = "sha256:" + hashlib.sha256(f"{os}{arch}{variant}".encode()).hexdigest()
    platform = {"os": os, "architecture": arch, **({"variant": variant} if variant else {})}
    return {"mediaType": media.OCI_MANIFEST, "digest": digest, "size": 1, "platform": platform}


def test_select_platform_prefers_exact_match() -> None:
    entries = media.parse_index(json.dumps({"manifests": [
        _entry("arm64", "v8"), _entry("amd64"), _entry("amd64", os="windows")]}).encode())
    chosen = media.select_platform(entries, "linux", "amd64")
    assert chosen.digest == entries[1].descriptor.digest
    assert media.select_platform(entries, "linux", "arm64").digest == entries[0].descriptor.digest


def test_select_platform_missing_is_not_found() -> None:
    entries = media.parse_index(json.dumps({"manifests": [_entry("s390x")]}).encode())
    with pytest.raises(errors.NotFound, match="linux/s390x"):
        media.select_platform(entries, "linux", "amd64")


def test_manifest_and_config_parsing() -> None:
    manifest = {"schemaVersion": 2, "config": {"mediaType": media.OCI_CONFIG, "digest": "sha256:" + "1" * 64,
                                               "size": 2},
                "layers": [{"mediaType": media.OCI_LAYER_GZIP, "digest": "sha256:" + "2" * 64, "size": 3}]}
    parsed = media.parse_manifest(json.dumps(manifest).encode())
    assert parsed.config.size == 2 and parsed.layers[0].size == 3
    assert media.media_type_of(json.dumps(manifest).encode()) == media.OCI_MANIFEST
    config = media.parse_config(json.dumps({"architecture": "amd64", "os": "linux", "config": {
        "User": "1000:1000", "Cmd": ["sh"], "Env": ["A=1"], "ExposedPorts": {"80/tcp": {}}},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "3" * 64]}}).encode())
    assert config.config.user == "1000:1000" and config.config.cmd == ["sh"]
    assert config.config.exposed_ports == ["80/tcp"]


@pytest.mark.parametrize("bad", [b"not json", b"[]", b'{"schemaVersion": 1, "fsLayers": []}', b'{"layers": 1}'])
def test_bad_manifests_are_invalid(bad: bytes) -> None:
    with pytest.raises(errors.InvalidArgument):
        media.parse_manifest(bad) if b"layers" in bad else media.media_type_of(bad)


def test_chain_ids() -> None:
    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    chain = chain_ids([a, b])
    assert chain[0] == a
    assert chain[1] == "sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest()


def test_bearer_challenge() -> None:
    [c] = parse_challenges('Bearer realm="https://auth.io/token",service="registry.io",'
                           'scope="repository:a/b:pull,push"')
    assert c.scheme == "bearer"
    assert c.params == {"realm": "https://auth.io/token", "service": "registry.io",
                        "scope": "repository:a/b:pull,push"}


def test_multiple_challenges() -> None:
    found = parse_challenges('Basic realm="x", Bearer realm="https://t/token",service=s')
    assert [c.scheme for c in found] == ["basic", "bearer"]
    assert found[1].params["service"] == "s"


def test_endpoints_order_and_schemes() -> None:
    cfg = RegistryConfig(mirrors={"docker.io": ["http://127.0.0.1:5000", "https://m.example/v2/"]},
                         insecure=["my.reg:5000"])
    eps = endpoints("docker.io", cfg)
    assert [e.base for e in eps] == ["http://127.0.0.1:5000", "https://m.example", "https://registry-1.docker.io"]
    assert [e.mirror for e in eps] == [True, True, False]
    assert [e.base for e in endpoints("127.0.0.1:5000", cfg)] == ["http://127.0.0.1:5000"]
    insecure = endpoints("my.reg:5000", cfg)
    assert [(e.base, e.verify_tls) for e in insecure] == [("https://my.reg:5000", False), ("http://my.reg:5000", True)]
    assert [e.base for e in endpoints("quay.io", cfg)] == ["https://quay.io"]


def test_registry_error_keeps_message() -> None:
    body = json.dumps({"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown",
                                   "detail": {"Tag": "nope"}}]}).encode()
    err = registry_error(404, body, "docker.io/library/x:nope")
    assert isinstance(err, errors.NotFound)
    assert "manifest unknown" in err.message and "docker.io/library/x:nope" in err.message
    assert isinstance(registry_error(401, b"", "x"), errors.Unauthenticated)
    assert isinstance(registry_error(503, b"", "x"), errors.Unavailable)


def test_parse_platform() -> None:
    assert media.parse_platform("linux/arm64/v8") == ("linux", "arm64", "v8")
    assert media.parse_platform("linux/amd64") == ("linux", "amd64", "")
    assert media.parse_platform("arm64") == ("linux", "arm64", "")
    for bad in ("", "a/b/c/d", "linux/", "linux/am d64"):
        with pytest.raises(errors.InvalidArgument):
            media.parse_platform(bad)
