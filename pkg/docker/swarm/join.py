"""The joining side of ``docker swarm join``: check the manager's CA against the token, then ask to join.

As swarmkit's node bootstrap: the token is ``SWMTKN-1-<CA digest>-<secret>``; the root CA is fetched
from the manager without verification, accepted only if its digest is the token's, and from then on
the manager must present a certificate that CA signed.  The node sends a CSR (its key stays here)
and receives its certificate, its node ID, the managers' etcd client URLs and, joining as a manager,
the ``--initial-cluster`` its etcd member starts with.
"""
from __future__ import annotations

import hmac
import re
import ssl
from dataclasses import dataclass
from typing import Any

import aiohttp

from pkg import errors
from pkg.docker.swarm import ca
from pkg.docker.swarm.addresses import join_addr, split_addr

Obj = dict[str, Any]

TOKEN = re.compile(r"^SWMTKN-1-([0-9a-z]{50})-([0-9a-z]{25})$")
TIMEOUT = aiohttp.ClientTimeout(total=60, connect=10)


@dataclass(frozen=True)
class Admission:
    node_id: str
    role: str
    cert_pem: bytes
    ca_pem: bytes
    managers: list[str]  # etcd client URLs
    initial_cluster: str


def token_digest(token: str) -> str:
    match = TOKEN.match(token.strip())
    if match is None:
        raise errors.InvalidArgument("invalid join token")
    return match.group(1)


def _url(remote: str, path: str) -> str:
    host, port = split_addr(remote, 2377)
    return f"https://{join_addr(host, port)}{path}"


async def fetch_ca(remote: str, expected_digest: str) -> bytes:
    """The manager's root CA, trusted only when its digest is the token's."""
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE  # what we read is checked against the token's digest below
    try:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session, \
                session.get(_url(remote, "/ca"), ssl=insecure) as resp:
            if resp.status != 200:
                raise errors.Unavailable(f"manager {remote} did not give its CA ({resp.status})")
            pem = await resp.content.read(64 * 1024)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise errors.Unavailable(f"could not reach the manager at {remote}: {exc}") from None
    try:
        got = ca.digest(pem)
    except ValueError:
        raise errors.Unavailable(f"manager {remote} sent an invalid CA certificate") from None
    if not hmac.compare_digest(got, expected_digest):
        raise errors.InvalidArgument(f"remote CA does not match fingerprint. Expected: {expected_digest}")
    return pem


async def request_join(remote: str, ca_pem: bytes, body: Obj) -> Admission:
    """POST /join over TLS verified against the swarm's root CA only."""
    context = ssl.create_default_context(cadata=ca_pem.decode())
    context.check_hostname = False  # the joiner may name the manager by any of its addresses
    try:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session, \
                session.post(_url(remote, "/join"), json=body, ssl=context) as resp:
            answer = await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise errors.Unavailable(f"could not join through the manager at {remote}: {exc}") from None
    if not isinstance(answer, dict):
        raise errors.Unavailable(f"manager {remote} answered the join with {answer!r}")
    if resp.status == 400:
        raise errors.InvalidArgument(str(answer.get("message", "")))
    if resp.status != 200:
        raise errors.Unavailable(str(answer.get("message", f"join failed ({resp.status})")))
    return Admission(node_id=str(answer["node_id"]), role=str(answer["role"]), cert_pem=answer["cert"].encode(),
                     ca_pem=answer["ca"].encode(), managers=[str(u) for u in answer.get("managers") or []],
                     initial_cluster=str(answer.get("initial_cluster", "")))
