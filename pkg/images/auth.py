"""Registry authentication: the ``WWW-Authenticate`` challenge, basic auth and the bearer-token flow.

The distribution spec's token flow: a 401 names a ``realm`` (token server),
``service`` and ``scope``; we GET the realm with those (and basic credentials,
or POST an OAuth2 refresh token when we hold an identity token) and retry the
request with ``Authorization: Bearer <token>``.  Tokens are cached per
(realm, service, scope) for their lifetime.
"""
from __future__ import annotations

import base64
import ipaddress
import json
import re
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp

from pkg import errors
from pkg.images.bounded import MAX_TOKEN_BODY, read_head
from pkg.images.model import RegistryAuth

_PARAM = re.compile(r'([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))')
TOKEN_TIMEOUT = aiohttp.ClientTimeout(total=30, connect=10)
DEFAULT_TOKEN_LIFETIME = 60


@dataclass(frozen=True)
class Challenge:
    scheme: str  # "basic" or "bearer"
    params: dict[str, str] = field(default_factory=dict)


def parse_challenges(header: str) -> list[Challenge]:
    """Parse ``WWW-Authenticate`` (possibly several challenges) into scheme + params."""
    out: list[Challenge] = []
    rest = header.strip()
    while rest:
        match = re.match(r"([A-Za-z][A-Za-z0-9_-]*)\s*", rest)
        if not match:
            break
        scheme = match.group(1).lower()
        rest = rest[match.end():]
        params: dict[str, str] = {}
        while True:
            pm = _PARAM.match(rest)
            if not pm:
                break
            value = pm.group(2) if pm.group(2) is not None else pm.group(3)
            params[pm.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
            rest = rest[pm.end():].lstrip()
            if not rest.startswith(","):
                break
            rest = rest[1:].lstrip()  # next param, or (when it does not parse as one) the next challenge
        out.append(Challenge(scheme, params))
    return out


def _safe_realm(realm: str) -> bool:
    url = urlsplit(realm)
    if url.scheme == "https":
        return True
    if url.scheme != "http":
        return False
    host = url.hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def basic_header(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


class Authorizer:
    """Holds the credentials of one operation and answers challenges with an Authorization header."""

    def __init__(self, auth: RegistryAuth | None) -> None:
        self._auth = auth if auth is not None and not auth.empty else None
        self._tokens: dict[tuple[str, str, str], tuple[str, float]] = {}
        self._schemes: dict[str, Challenge] = {}  # host -> the challenge it answered with

    def header_for(self, host: str, scope: str) -> str | None:
        """The Authorization header to send up front, once a host has challenged us."""
        challenge = self._schemes.get(host)
        if challenge is None:
            if self._auth is not None and self._auth.registry_token:
                return f"Bearer {self._auth.registry_token}"
            return None
        if challenge.scheme == "basic":
            return self._basic()
        key = (challenge.params.get("realm", ""), challenge.params.get("service", ""), scope)
        cached = self._tokens.get(key)
        if cached and cached[1] > time.monotonic():
            return f"Bearer {cached[0]}"
        return None

    def _basic(self) -> str | None:
        if self._auth is None or not (self._auth.username or self._auth.password):
            return None
        return basic_header(self._auth.username, self._auth.password)

    async def answer(self, session: aiohttp.ClientSession, host: str, header: str, scope: str) -> str | None:
        """Handle a 401: return the header to retry with, or None when we have nothing better to offer."""
        challenges = parse_challenges(header)
        bearer = next((c for c in challenges if c.scheme == "bearer"), None)
        basic = next((c for c in challenges if c.scheme == "basic"), None)
        if bearer is not None and bearer.params.get("realm"):
            self._schemes[host] = bearer
            token, lifetime = await self._fetch_token(session, bearer, scope)
            key = (bearer.params["realm"], bearer.params.get("service", ""), scope)
            self._tokens[key] = (token, time.monotonic() + max(lifetime - 10, 10))
            return f"Bearer {token}"
        if basic is not None:
            self._schemes[host] = basic
            return self._basic()
        return None

    async def _fetch_token(self, session: aiohttp.ClientSession, challenge: Challenge,
                           scope: str) -> tuple[str, int]:
        realm = challenge.params["realm"]
        service = challenge.params.get("service", "")
        # The registry names its token server: credentials never travel to it in clear text (anonymous then).
        auth = self._auth if _safe_realm(realm) else None
        scopes = [s for s in {scope, challenge.params.get("scope", "")} if s]
        try:
            if auth is not None and auth.identity_token:
                form = {"grant_type": "refresh_token", "refresh_token": auth.identity_token,
                        "service": service, "client_id": "narwhal", "scope": " ".join(scopes)}
                resp_cm = session.post(realm, data=form, timeout=TOKEN_TIMEOUT)
            else:
                params = [("service", service)] if service else []
                params += [("scope", s) for s in scopes]
                headers = {}
                basic = self._basic() if auth is not None else None
                if basic:
                    headers["Authorization"] = basic
                resp_cm = session.get(realm, params=params, headers=headers, timeout=TOKEN_TIMEOUT)
            async with resp_cm as resp:
                body = await read_head(resp, MAX_TOKEN_BODY + 1)
                if len(body) > MAX_TOKEN_BODY:
                    raise errors.Unavailable(f"token server {realm}: the response is larger than {MAX_TOKEN_BODY}")
                if resp.status in (401, 403):
                    raise errors.Unauthenticated(f"token server {realm}: authentication failed: "
                                                 f"{body[:200].decode(errors='replace').strip()}")
                if resp.status != 200:
                    raise errors.Unavailable(f"token server {realm}: HTTP {resp.status}")
                try:
                    doc = json.loads(body)
                except ValueError:
                    raise errors.Unavailable(f"token server {realm}: response is not JSON") from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise errors.Unavailable(f"token server {realm}: {exc or type(exc).__name__}") from None
        token = doc.get("token") or doc.get("access_token") if isinstance(doc, dict) else None
        if not isinstance(token, str) or not token:
            raise errors.Unavailable(f"token server {realm}: no token in the response")
        lifetime = doc.get("expires_in")
        return token, lifetime if isinstance(lifetime, int) and lifetime > 0 else DEFAULT_TOKEN_LIFETIME
