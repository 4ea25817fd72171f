"""Multi-node Swarm's pure pieces: the CA and node certificates, tokens -> roles, moby's leave messages with
Raft's quorum arithmetic, the heartbeat period."""
from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from pkg import errors
from pkg.docker.swarm import ca, objects
from pkg.docker.swarm.join import token_digest
from pkg.docker.swarm.joinserver import INVALID_TOKEN, role_of
from pkg.docker.swarm.membership import heartbeat_period
from pkg.docker.swarm.roles import LAST_MANAGER, leave_refusal


def test_tokens_carry_the_root_ca_digest() -> None:
    root = ca.new_root()
    cluster = objects.new_cluster(objects.default_cluster_spec(), ca.der(root.cert_pem), default_addr_pool=[],
                                  subnet_size=24, data_path_port=4789)
    for token in cluster["JoinTokens"].values():
        assert token_digest(token) == ca.digest(root.cert_pem)
    assert ca.digest(ca.new_root().cert_pem) != ca.digest(root.cert_pem)
    with pytest.raises(errors.InvalidArgument, match="invalid join token"):
        token_digest("SWMTKN-1-short-secret")


def test_role_of_token() -> None:
    cluster = {"JoinTokens": {"Worker": "SWMTKN-1-w", "Manager": "SWMTKN-1-m"}}
    assert role_of(cluster, "SWMTKN-1-w") == "worker"
    assert role_of(cluster, "SWMTKN-1-m") == "manager"
    with pytest.raises(errors.InvalidArgument) as exc:
        role_of(cluster, "SWMTKN-1-x")
    assert exc.value.message == INVALID_TOKEN


def test_node_certificate_from_csr() -> None:
    root = ca.new_root()
    csr, _key = ca.new_csr("joining")
    pem = ca.sign(root, csr, "nodeid123", "worker", "clusterid", ["10.1.2.3", "not-an-ip"])
    cert = x509.load_pem_x509_certificate(pem)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "nodeid123"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == "swarm-worker"
    root_cert = x509.load_pem_x509_certificate(root.cert_pem)
    cert.verify_directly_issued_by(root_cert)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["10.1.2.3"]
    with pytest.raises(errors.InvalidArgument):
        ca.sign(root, b"garbage", "n", "worker", "c", [])


def _managers(reachable: int, unreachable: int) -> list[dict[str, object]]:
    return ([{"ManagerStatus": {"Reachability": "reachable"}}] * reachable
            + [{"ManagerStatus": {"Reachability": "unreachable"}}] * unreachable)


def test_leave_refusal_quorum_arithmetic() -> None:
    assert leave_refusal(_managers(1, 0)).endswith(LAST_MANAGER)
    two = leave_refusal(_managers(2, 0))
    assert "Removing this node leaves 1 managers out of 2." in two and "--force-new-cluster" in two
    three = leave_refusal(_managers(3, 0))  # quorum survives: only the generic warning
    assert "Removing this node" not in three and three.endswith("Use `--force` to suppress this message.")
    assert "Removing this node leaves 2 managers out of 4." in leave_refusal(_managers(3, 1))
    assert "Removing this node leaves 2 managers out of 5." in leave_refusal(_managers(3, 2))
    assert "Removing this node" not in leave_refusal(_managers(5, 0))


def test_heartbeat_period() -> None:
    assert heartbeat_period(None) == 5.0
    assert heartbeat_period({"Spec": {"Dispatcher": {"HeartbeatPeriod": 3_000_000_000}}}) == 3.0
    assert heartbeat_period({"Spec": {"Dispatcher": {"HeartbeatPeriod": 100_000_000}}}) == 2.0
