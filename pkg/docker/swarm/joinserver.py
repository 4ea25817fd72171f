"""The manager's join port (:2377): what a ``docker swarm join`` talks to (swarmkit's CA and node services).

HTTPS with a certificate the swarm's CA signed for this manager.  Two calls:

- ``GET /ca``: the root CA certificate (PEM).  The joiner fetches it unverified and checks its digest
  against the one in its token before trusting anything else (swarmkit's GetRootCACertificate).
- ``POST /join``: token, CSR, addresses (and for a manager its etcd peer URL).  The token's secret picks
  the role; the node record is created, a manager's peer URL is added to the etcd cluster
  (``MemberAdd``) and the answer carries the node ID, its certificate, the etcd client URLs of the
  managers and, for a manager, the ``--initial-cluster`` it must start its member with.
"""
from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
import ssl
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from pkg import errors
from pkg.docker.swarm import ca, keys, objects
from pkg.docker.swarm.addresses import split_addr
from pkg.docker.swarm.store import Store

log = logging.getLogger(__name__)

Obj = dict[str, Any]

INVALID_TOKEN = "rpc error: code = InvalidArgument desc = A valid join token is necessary to join this cluster"


async def _ca_data(store: Store) -> Obj:
    raw = await store.get_raw("ca")
    if raw is None:
        raise errors.Unavailable("the swarm has no certificate authority (made before multi-node support)")
    data: Obj = json.loads(raw)
    return data


async def root_ca(store: Store, dek: bytes | None) -> ca.KeyPair:
    """The root CA from etcd; its key is sealed with the swarm's DEK (keys.py), as secrets are, so with
    autolock only an unlocked manager can sign (swarmkit keeps it in its encrypted Raft log)."""
    data = await _ca_data(store)
    if "key" in data:  # a swarm made before the key was sealed
        return ca.KeyPair(data["cert"].encode(), data["key"].encode())
    return ca.KeyPair(data["cert"].encode(), keys.open_data(dek, data["sealed_key"]))


def ca_record(root: ca.KeyPair, dek: bytes) -> bytes:
    """What etcd keeps of the root CA: the certificate, and the key sealed with the DEK."""
    sealed = keys.seal_data(dek, base64.b64encode(root.key_pem).decode())
    return json.dumps({"cert": root.cert_pem.decode(), "sealed_key": sealed}).encode()


def role_of(cluster: Obj, token: str) -> str:
    """The role a token grants, compared in constant time; InvalidArgument when it grants none."""
    tokens = cluster.get("JoinTokens") or {}
    for role, key in (("manager", "Manager"), ("worker", "Worker")):
        if hmac.compare_digest(str(tokens.get(key, "")).encode(), token.encode()):
            return role
    raise errors.InvalidArgument(INVALID_TOKEN)


async def add_member(store: Store, peer_url: str, patience: float = 30.0) -> None:
    """``MemberAdd``, retried: etcd refuses it ("unhealthy cluster") until the members have been connected to
    each other for its health interval (5 s), e.g. right after the previous manager joined."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience
    while True:
        try:
            await store.add_member(peer_url)
            return
        except errors.Unavailable:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(1.0)


async def admit(store: Store, body: Obj, engine_version: str, dek: bytes | None = None) -> Obj:
    """One join: check the token, sign the CSR, record the node, add a manager's etcd member."""
    cluster = await store.get_cluster()
    if cluster is None:
        raise errors.Unavailable("this manager's swarm is gone")
    role = role_of(cluster, str(body.get("token", "")))
    advertise = str(body.get("advertise_addr", ""))
    host, _ = split_addr(advertise, 2377)
    availability = str(body.get("availability") or "active")
    if availability not in ("active", "pause", "drain"):
        raise errors.InvalidArgument(f"invalid Availability: {availability!r}")
    node_id = objects.new_id()
    root = await root_ca(store, dek)
    cert = ca.sign(root, str(body.get("csr", "")).encode(), node_id, role, cluster["ID"], [host])
    answer: Obj = {"node_id": node_id, "role": role, "cert": cert.decode(), "ca": root.cert_pem.decode()}
    peer_url = str(body.get("peer_url", ""))
    if role == "manager" and not peer_url.startswith(("http://", "https://")):
        raise errors.InvalidArgument("a manager join needs the joiner's etcd peer URL")
    answer["managers"] = [url for m in await store.members() for url in m["client_urls"]]
    node = objects.new_node(node_id, role, availability, advertise, body.get("resources") or {},
                            str(body.get("engine_version") or engine_version))
    node["Status"]["State"] = "unknown"  # ready once the node itself reports in
    if "ManagerStatus" in node:
        node["ManagerStatus"]["Leader"] = False
    # The record first: once the member is added, the cluster may have no quorum until the joiner starts it.
    await store.create("nodes", node)
    if role == "manager":
        try:
            await add_member(store, peer_url)
        except errors.NarwhalError:
            await store.delete("nodes", node_id)
            raise
        members = await store.members()
        answer["initial_cluster"] = ",".join(
            f"{m['name'] or node_id}={m['peer_urls'][0]}" for m in members if m["peer_urls"])
    log.info("swarm: node %s joined as %s from %s", node_id, role, advertise)
    return answer


class JoinServer:
    """The HTTPS listener; started on managers, stopped when the node leaves or is demoted."""

    def __init__(self, store: Store, listen: tuple[str, int], advertise_host: str, node_id: str,
                 engine_version: str, dek: Callable[[], bytes | None] = lambda: None) -> None:
        self.store = store
        self.dek = dek  # opens the CA key (keys.py)
        self.listen = listen
        self.advertise_host = advertise_host
        self.node_id = node_id
        self.engine_version = engine_version
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        root = await root_ca(self.store, self.dek())
        cluster = await self.store.get_cluster()
        org = cluster["ID"] if cluster else ""
        pair = ca.issue(root, self.node_id, "manager", org, [self.advertise_host])
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        with tempfile.TemporaryDirectory() as tmp:  # load_cert_chain reads files only
            cert, key = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
            cert.write_bytes(pair.cert_pem + root.cert_pem)
            key.write_bytes(pair.key_pem)
            key.chmod(0o600)
            context.load_cert_chain(cert, key)
        app = web.Application(client_max_size=64 * 1024)
        app.router.add_get("/ca", self._ca)
        app.router.add_post("/join", self._join)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.listen[0] or None, self.listen[1], ssl_context=context).start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        log.info("swarm: join port listening on %s:%d", *self.listen)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _ca(self, request: web.Request) -> web.Response:
        cert = str((await _ca_data(self.store))["cert"]).encode()
        return web.Response(body=cert, content_type="application/x-pem-file")

    async def _join(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise errors.InvalidArgument("join request must be a JSON object")
            return web.json_response(await admit(self.store, body, self.engine_version, self.dek()))
        except json.JSONDecodeError:
            return web.json_response({"message": "invalid JSON"}, status=400)
        except errors.NarwhalError as exc:
            status = 400 if isinstance(exc, errors.InvalidArgument) else 503
            return web.json_response({"message": exc.message}, status=status)
