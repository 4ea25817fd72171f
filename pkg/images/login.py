"""Registry log-in (Docker ``/auth``) and the v1 search API (Docker ``/images/search``).

Log-in checks credentials the way ``docker login`` does: ``GET /v2/`` on the
registry itself (never a mirror), answering its basic or bearer challenge with
the credentials; a registry that asks for none accepts any.  Search talks to
the registry's v1 search endpoint (``index.docker.io`` for Docker Hub).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from urllib.parse import quote

import aiohttp

from pkg import errors
from pkg.config import RegistryConfig
from pkg.images.auth import Authorizer, basic_header
from pkg.images.bounded import IDENTITY, MAX_TOKEN_BODY, read_body
from pkg.images.model import RegistryAuth
from pkg.images.reference import DEFAULT_DOMAIN, LEGACY_DOMAIN
from pkg.images.registry import Endpoint, endpoints, registry_error

log = logging.getLogger(__name__)

TIMEOUT = aiohttp.ClientTimeout(total=30, connect=10)
DOCKER_INDEX = "https://index.docker.io"
LOGIN_SUCCEEDED = "Login Succeeded"


@dataclass(frozen=True)
class SearchResult:
    name: str
    description: str
    star_count: int
    is_official: bool
    is_automated: bool


def registry_host(server_address: str) -> str:
    """``https://index.docker.io/v1/`` -> ``docker.io``; ``http://host:5000/v2/`` -> ``host:5000``."""
    host = server_address.strip()
    if "://" in host:
        host = host.split("://", 1)[1]
    host = host.split("/", 1)[0].lower()
    if not host or host in (LEGACY_DOMAIN, "registry-1.docker.io", DEFAULT_DOMAIN):
        return DEFAULT_DOMAIN
    return host


def _session(ep: Endpoint) -> aiohttp.ClientSession:
    connector = None if ep.verify_tls else aiohttp.TCPConnector(ssl=False)
    return aiohttp.ClientSession(timeout=TIMEOUT, trust_env=False, connector=connector, auto_decompress=False,
                                 headers=IDENTITY)


async def login(cfg: RegistryConfig, auth: RegistryAuth) -> str:
    """Check ``auth`` against its registry; returns the status text, raises Unauthenticated when refused."""
    domain = registry_host(auth.server_address)
    last: errors.NarwhalError | None = None
    for ep in (e for e in endpoints(domain, cfg) if not e.mirror):
        try:
            await _login_at(ep, auth)
            return LOGIN_SUCCEEDED
        except errors.Unavailable as exc:
            last = exc  # an insecure host: HTTPS failed, try plain HTTP
    assert last is not None
    raise last


async def _login_at(ep: Endpoint, auth: RegistryAuth) -> None:
    url = ep.url("")
    try:
        async with _session(ep) as session:
            async with session.get(url) as resp:
                body = await read_body(resp, MAX_TOKEN_BODY, f'Get "{url}"')
                if resp.status == 200:
                    return
                challenge = resp.headers.get("WWW-Authenticate", "")
                if resp.status != 401 or not challenge:
                    raise registry_error(resp.status, body, f'Get "{url}"')
            answer = await Authorizer(auth).answer(session, ep.host, challenge, "")
            if answer is None:
                raise errors.Unauthenticated(f'Get "{url}": unauthorized: no credentials given')
            async with session.get(url, headers={"Authorization": answer}) as resp:
                body = await read_body(resp, MAX_TOKEN_BODY, f'Get "{url}"')
                if resp.status == 200:
                    return
                raise registry_error(resp.status, body, f'Get "{url}"')
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise errors.Unavailable(f'Get "{url}": {exc or type(exc).__name__}') from None


async def search(cfg: RegistryConfig, term: str, limit: int, auth: RegistryAuth | None = None) -> list[SearchResult]:
    """Search a registry's v1 index: ``term`` may start with a registry host (``host:5000/name``)."""
    if not term:
        raise errors.InvalidArgument("term is required")
    if not 1 <= limit <= 100:
        raise errors.InvalidArgument(f"limit {limit} is outside the range of [1, 100]")
    first, sep, rest = term.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        domain, query = registry_host(first), rest
    else:
        domain, query = DEFAULT_DOMAIN, term
    if domain == DEFAULT_DOMAIN:
        base = DOCKER_INDEX
        ep = Endpoint(base, LEGACY_DOMAIN)
    else:
        ep = next(e for e in endpoints(domain, cfg) if not e.mirror)
        base = ep.base
    url = f"{base}/v1/search?q={quote(query)}&n={limit}"
    headers = {}
    if auth is not None and (auth.username or auth.password):
        headers["Authorization"] = basic_header(auth.username, auth.password)
    try:
        async with _session(ep) as session, session.get(url, headers=headers) as resp:
            body = await read_body(resp, MAX_TOKEN_BODY, f'Get "{url}"')
            if resp.status != 200:
                raise registry_error(resp.status, body, f'Get "{url}"')
            doc = json.loads(body)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise errors.Unavailable(f'Get "{url}": {exc or type(exc).__name__}') from None
    except ValueError:
        raise errors.Unavailable(f'Get "{url}": the registry answered with something that is not JSON') from None
    results = doc.get("results") if isinstance(doc, dict) else None
    out = []
    for item in results if isinstance(results, list) else []:
        if isinstance(item, dict) and item.get("name"):
            out.append(SearchResult(str(item["name"]), str(item.get("description") or ""),
                                    int(item.get("star_count") or 0), bool(item.get("is_official")),
                                    bool(item.get("is_automated"))))
    return out[:limit]
