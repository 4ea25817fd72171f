"""The swarm's certificate authority: a root CA made at ``swarm init``, node certificates signed from CSRs.

As swarmkit's ``ca`` package: the root CA's digest is the middle part of every join token, so a
joining node that fetched the CA over an unverified connection can check it before trusting it
(and then talks to the manager over TLS verified against that root only).  Managers serve the join
port (:2377) with a certificate the CA signed; each node gets its own certificate (CN = node ID,
OU = its role) in exchange for a CSR and a valid token.  Keys are ECDSA P-256 like swarmkit's.

The CA key is kept in etcd next to the cluster object (managers need it to sign); swarmkit keeps it
in its Raft store too (encrypted when autolock is on, which Narwhal does not do yet).
"""
from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pkg import errors
from pkg.docker.swarm import objects

ROOT_CN = "swarm-ca"
ROOT_VALIDITY = datetime.timedelta(days=20 * 365)  # swarmkit: 20 years
NODE_VALIDITY = datetime.timedelta(days=90)  # swarmkit's default NodeCertExpiry


@dataclass(frozen=True)
class KeyPair:
    cert_pem: bytes
    key_pem: bytes


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def new_root() -> KeyPair:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ROOT_CN)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + ROOT_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .sign(key, hashes.SHA256()))
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def der(cert_pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)


def digest(root_cert_pem: bytes) -> str:
    """The token's CA digest: SHA-256 of the root certificate (DER), base 36."""
    return objects.ca_digest(der(root_cert_pem))


def new_csr(node_id: str) -> tuple[bytes, bytes]:
    """A fresh key and a CSR for it: (csr PEM, key PEM); the key never leaves the node."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_id)]))
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def sign(root: KeyPair, csr_pem: bytes, node_id: str, role: str, org: str, addresses: list[str]) -> bytes:
    """A node certificate for the CSR's key: CN node ID, OU ``swarm-<role>``, O the cluster ID, IP SANs."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError:
        raise errors.InvalidArgument("invalid certificate signing request") from None
    if not csr.is_signature_valid:
        raise errors.InvalidArgument("invalid certificate signing request signature")
    ca_cert = x509.load_pem_x509_certificate(root.cert_pem)
    ca_key = serialization.load_pem_private_key(root.key_pem, None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_id),
                         x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, f"swarm-{role}"),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)])
    sans: list[x509.GeneralName] = [x509.DNSName(node_id)]
    for addr in addresses:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(addr)))
        except ValueError:
            continue
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca_cert.subject)
            .public_key(csr.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + NODE_VALIDITY)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


def issue(root: KeyPair, node_id: str, role: str, org: str, addresses: list[str]) -> KeyPair:
    """A key and certificate made here (a manager's own serving certificate)."""
    csr, key = new_csr(node_id)
    return KeyPair(sign(root, csr, node_id, role, org, addresses), key)
