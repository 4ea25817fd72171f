"""Mutual TLS for the swarm's etcd: this node's certificate files, etcd's flags, and an aetcd client that
presents the node's certificate.

Swarmkit runs every manager and agent connection over mTLS with the node certificates its CA signed;
here the control plane is etcd, so the same certificates secure it.  Every member started by narwhald
serves clients and peers over https, requires a client certificate the swarm's root CA signed
(``--client-cert-auth``, ``--peer-client-cert-auth``) and presents the node's own certificate to its
peers; managers and workers connect with theirs.  A certificate of another CA, or none, is refused at
the handshake.  The node certificate's IP SAN is the advertise address: etcd checks it against the
address a peer connects from, and clients verify the member's address against it.

The files live under ``<root>/docker/swarm/certificates/`` (key mode 0600) and are read on every
connection (etcd reads its own on every handshake), so a renewed certificate is used without a
restart.  With an external etcd, the CA, certificate and key come from the config
(``swarm-etcd-ca-file``/``-cert-file``/``-key-file``).
"""
from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

import aetcd
import grpc
from aetcd import rpc, watcher

ROOT_CA = "swarm-root-ca.crt"
NODE_CERT = "swarm-node.crt"
NODE_KEY = "swarm-node.key"


@dataclass(frozen=True)
class TLSFiles:
    """The PEM files a node uses for etcd: the CA to trust, its certificate and its key."""

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def under(cls, directory: Path) -> TLSFiles:
        """The node's own files (``<root>/docker/swarm/certificates``)."""
        return cls(directory / ROOT_CA, directory / NODE_CERT, directory / NODE_KEY)

    def exists(self) -> bool:
        return self.ca.is_file() and self.cert.is_file() and self.key.is_file()

    def read(self) -> tuple[bytes, bytes, bytes] | None:
        """(CA, certificate, key), or None when one is missing."""
        try:
            return self.ca.read_bytes(), self.cert.read_bytes(), self.key.read_bytes()
        except OSError:
            return None

    def write(self, ca_pem: bytes, cert_pem: bytes, key_pem: bytes) -> None:
        """Each file replaced atomically (a reader sees the old or the new one); the key 0600 from the start."""
        self.cert.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        for path, data, mode in ((self.ca, ca_pem, 0o644), (self.key, key_pem, 0o600), (self.cert, cert_pem, 0o644)):
            tmp = path.with_name(path.name + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(root_certificates=self.ca.read_bytes(),
                                            private_key=self.key.read_bytes(),
                                            certificate_chain=self.cert.read_bytes())

    def etcd_flags(self) -> list[str]:
        """etcd 3.4's flags for https clients and peers, both with certificates of this CA only."""
        return ["--cert-file", str(self.cert), "--key-file", str(self.key), "--trusted-ca-file", str(self.ca),
                "--client-cert-auth",
                "--peer-cert-file", str(self.cert), "--peer-key-file", str(self.key),
                "--peer-trusted-ca-file", str(self.ca), "--peer-client-cert-auth"]


class TLSClient(aetcd.Client):
    """aetcd's client over a TLS channel (aetcd itself only dials insecure channels): the same stubs, the
    channel made with the node's credentials."""

    _is_connecting: bool  # aetcd's (untyped) connection state, used as its own connect() uses it

    def __init__(self, host: str, port: int, tls: TLSFiles, timeout: int | None = None) -> None:
        super().__init__(host=host, port=port, timeout=timeout)
        self._tls = tls

    async def connect(self) -> None:
        if self._connected.is_set():
            return
        if self._is_connecting:
            await asyncio.wait_for(self._connected.wait(), self._connect_wait_timeout)
            return
        self._is_connecting = True
        try:
            credentials = await asyncio.to_thread(self._tls.credentials)
            host = f"[{self._host}]" if ":" in self._host else self._host
            self.channel = grpc.aio.secure_channel(f"{host}:{self._port}", credentials,
                                                   options=list(self._options.items()))
            self.kvstub = rpc.KVStub(self.channel)
            self.clusterstub = rpc.ClusterStub(self.channel)
            self.leasestub = rpc.LeaseStub(self.channel)
            self.maintenancestub = rpc.MaintenanceStub(self.channel)
            self._watcher = watcher.Watcher(rpc.WatchStub(self.channel), timeout=self._timeout,
                                            metadata=self.metadata)
            self._connected.set()
        finally:
            self._is_connecting = False
