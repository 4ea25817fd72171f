"""The distribution client against an in-process aiohttp registry: auth flows, Range, errors, timeouts."""
from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from pkg import errors
from pkg.config import RegistryConfig
from pkg.images import media, reference
from pkg.images.model import RegistryAuth
from pkg.images.registry import RegistrySession

BLOB = bytes(range(256)) * 64
BLOB_DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()
MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": media.OCI_MANIFEST,
                       "config": {"mediaType": media.OCI_CONFIG, "digest": BLOB_DIGEST, "size": len(BLOB)},
                       "layers": []}).encode()


class FakeRegistry:
    """Serves one manifest and one blob; optionally demands a bearer token from its own /token."""

    def __init__(self, token_auth: bool = False) -> None:
        self.token_auth = token_auth
        self.challenges = 0
        self.token_requests: list[tuple[str, list[str]]] = []
        self.port = 0

    def _authorized(self, request: web.Request) -> bool:
        return not self.token_auth or request.headers.get("Authorization") == "Bearer tok-123"

    def _challenge(self) -> web.Response:
        self.challenges += 1
        realm = f"http://127.0.0.1:{self.port}/token"
        return web.json_response(
            {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}, status=401,
            headers={"WWW-Authenticate": f'Bearer realm="{realm}",service="fake"'})

    async def token(self, request: web.Request) -> web.Response:
        self.token_requests.append((request.headers.get("Authorization", ""), request.query.getall("scope", [])))
        if request.headers.get("Authorization") != "Basic " + base64.b64encode(b"u:p").decode():
            return web.json_response({"details": "bad credentials"}, status=401)
        return web.json_response({"token": "tok-123", "expires_in": 300})

    async def manifest(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._challenge()
        if request.match_info["ref"] not in ("v1", "sha256:" + hashlib.sha256(MANIFEST).hexdigest()):
            return web.json_response({"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]},
                                     status=404)
        return web.Response(body=MANIFEST, content_type=media.OCI_MANIFEST)

    async def blob(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._challenge()
        rng = request.headers.get("Range", "")
        if rng.startswith("bytes="):
            start = int(rng[6:].rstrip("-"))
            return web.Response(body=BLOB[start:], status=206)
        return web.Response(body=BLOB)


@pytest.fixture
async def fake() -> AsyncIterator[FakeRegistry]:
    reg = FakeRegistry()
    app = web.Application()
    app.router.add_get("/token", reg.token)
    app.router.add_get("/v2/{repo:.+}/manifests/{ref}", reg.manifest)
    app.router.add_get("/v2/{repo:.+}/blobs/{digest}", reg.blob)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    reg.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield reg
    await runner.cleanup()


def session(port: int, ref: str = "team/app:v1", auth: RegistryAuth | None = None) -> RegistrySession:
    return RegistrySession(reference.parse(f"127.0.0.1:{port}/{ref}"), RegistryConfig(), auth)


async def _read(chunks: AsyncIterator[bytes]) -> bytes:
    return b"".join([c async for c in chunks])


async def test_resolve_and_ranged_blob(fake: FakeRegistry) -> None:
    async with session(fake.port) as s:
        ep, desc, body = await s.resolve()
        assert body == MANIFEST and desc.media_type == media.OCI_MANIFEST
        assert desc.digest == "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
        start, chunks = await s.open_blob(ep, BLOB_DIGEST, 1000)
        assert start == 1000 and await _read(chunks) == BLOB[1000:]


async def test_unknown_tag_carries_registry_message(fake: FakeRegistry) -> None:
    async with session(fake.port, "team/app:nope") as s:
        with pytest.raises(errors.NotFound, match="manifest unknown"):
            await s.resolve()


async def test_bearer_token_flow_and_cache(fake: FakeRegistry) -> None:
    fake.token_auth = True
    async with session(fake.port, auth=RegistryAuth(username="u", password="p")) as s:
        ep, _, _ = await s.resolve()
        _, chunks = await s.open_blob(ep, BLOB_DIGEST)
        assert await _read(chunks) == BLOB
    assert fake.challenges == 1  # the second request reused the cached token
    [(basic, scopes)] = fake.token_requests
    assert basic.startswith("Basic ") and scopes == ["repository:team/app:pull"]


async def test_bearer_with_bad_credentials_is_unauthenticated(fake: FakeRegistry) -> None:
    fake.token_auth = True
    async with session(fake.port, auth=RegistryAuth(username="u", password="wrong")) as s:
        with pytest.raises(errors.Unauthenticated):
            await s.resolve()


async def test_anonymous_against_token_registry_is_unauthenticated(fake: FakeRegistry) -> None:
    fake.token_auth = True
    async with session(fake.port) as s:
        with pytest.raises(errors.Unauthenticated):
            await s.resolve()


async def test_silent_registry_fails_in_bounded_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that accepts connections and never answers: Unavailable once api_timeout passes."""
    stop = asyncio.Event()

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1 << 16)
        await stop.wait()
        writer.close()

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    monkeypatch.setattr(RegistrySession, "api_timeout", 0.3)
    try:
        async with session(port) as s:
            with pytest.raises(errors.Unavailable, match="timed out"):
                await s.resolve()
    finally:
        stop.set()
        server.close()
        await server.wait_closed()


async def test_connection_refused_is_unavailable() -> None:
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    async with session(port) as s:
        with pytest.raises(errors.Unavailable):
            await s.resolve()
