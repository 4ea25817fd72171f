"""etcd over mTLS, the pure parts: a member's URLs and flags with and without the node's certificates, the
certificate files, and the root CA's key sealed with the DEK before it is written to etcd."""
from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import cast

import pytest

from pkg import errors
from pkg.docker.swarm import ca, keys
from pkg.docker.swarm.etcd import MemberConfig
from pkg.docker.swarm.joinserver import ca_record, root_ca
from pkg.docker.swarm.store import Store
from pkg.docker.swarm.tls import TLSFiles


def test_member_urls_and_flags(tmp_path: Path) -> None:
    plain = MemberConfig(name="n1", client_port=2379, peer_host="10.0.0.5", peer_port=2380)
    assert (plain.peer_url, plain.public_client_url, plain.local_endpoint) == (
        "http://10.0.0.5:2380", "http://10.0.0.5:2379", ("127.0.0.1", 2379))
    assert plain.tls is None
    secure = MemberConfig(name="n1", client_port=2379, peer_host="10.0.0.5", peer_port=2380,
                          tls_dir=str(tmp_path))
    assert secure.peer_url == "https://10.0.0.5:2380"
    assert secure.client_urls == "https://127.0.0.1:2379,https://10.0.0.5:2379"
    assert secure.local_endpoint == ("10.0.0.5", 2379)  # the address the member's certificate names
    assert secure.tls == TLSFiles.under(tmp_path)
    flags = secure.tls.etcd_flags()
    for flag in ("--client-cert-auth", "--peer-client-cert-auth"):
        assert flag in flags
    for flag, name in (("--cert-file", "swarm-node.crt"), ("--peer-key-file", "swarm-node.key"),
                       ("--trusted-ca-file", "swarm-root-ca.crt"), ("--peer-trusted-ca-file", "swarm-root-ca.crt")):
        assert flags[flags.index(flag) + 1] == str(tmp_path / name)
    v6 = MemberConfig(name="n", client_port=1, peer_host="fd00::5", peer_port=2, tls_dir="/x")
    assert v6.peer_url == "https://[fd00::5]:2"


def test_certificate_files(tmp_path: Path) -> None:
    files = TLSFiles.under(tmp_path / "certificates")
    assert not files.exists() and files.read() is None
    files.write(b"ca", b"cert", b"key")
    assert files.exists() and files.read() == (b"ca", b"cert", b"key")
    assert stat.S_IMODE(files.key.stat().st_mode) == 0o600
    assert stat.S_IMODE(files.cert.parent.stat().st_mode) == 0o700


class RawStore:
    def __init__(self) -> None:
        self.raw: dict[str, bytes] = {}

    async def get_raw(self, name: str) -> bytes | None:
        return self.raw.get(name)


async def test_ca_key_sealed_with_the_dek() -> None:
    root = ca.new_root()
    dek = keys.new_dek()
    store = RawStore()
    store.raw["ca"] = ca_record(root, dek)
    seam = cast(Store, store)  # root_ca makes one call: get_raw
    assert b"PRIVATE KEY" not in store.raw["ca"] and root.cert_pem.decode() == json.loads(store.raw["ca"])["cert"]
    opened = await root_ca(seam, dek)
    assert opened == root
    with pytest.raises(errors.FailedPrecondition):  # a locked node has no DEK: it cannot sign
        await root_ca(seam, None)
    with pytest.raises(errors.Internal):
        await root_ca(seam, keys.new_dek())
    # a swarm made before the key was sealed still works
    store.raw["ca"] = json.dumps({"cert": root.cert_pem.decode(), "key": root.key_pem.decode()}).encode()
    assert await root_ca(seam, None) == root
