"""A hostile registry (issue 15): gzip bombs and endless bodies cost a bounded amount of memory and time, and
credentials go only to the registry they were given for (never a mirror, never plain HTTP elsewhere)."""
from __future__ import annotations

import asyncio
import tracemalloc
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from pkg import errors
from pkg.config import RegistryConfig
from pkg.images import media, reference
from pkg.images.auth import _safe_realm
from pkg.images.model import RegistryAuth
from pkg.images.registry import Endpoint, RegistrySession, may_carry_credentials

BOMB_BYTES = 256 << 20  # what the bomb inflates to


def _gzip_bomb() -> bytes:
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(1 << 20)
    return b"".join([*(comp.compress(zeros) for _ in range(BOMB_BYTES >> 20)), comp.flush()])


@dataclass
class Hostile:
    port: int = 0
    seen_auth: list[str] = field(default_factory=list)
    bomb: bytes = b""

    async def endless(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(status=int(request.query.get("status", "200")))
        resp.content_type = media.OCI_MANIFEST
        await resp.prepare(request)
        chunk = b"{" * (64 << 10)
        try:
            for _ in range(1 << 16):  # 4 GiB at most; the client must stop long before
                await resp.write(chunk)
        except (ConnectionResetError, ConnectionError):
            pass
        return resp

    async def bomb_handler(self, request: web.Request) -> web.Response:
        return web.Response(body=self.bomb, status=int(request.query.get("status", "200")),
                            headers={"Content-Encoding": "gzip", "Content-Type": media.OCI_MANIFEST})

    async def auth_probe(self, request: web.Request) -> web.Response:
        self.seen_auth.append(request.headers.get("Authorization", ""))
        return web.json_response({"errors": [{"code": "UNAUTHORIZED", "message": "no"}]}, status=401,
                                 headers={"WWW-Authenticate": 'Basic realm="x"'})


@pytest.fixture
async def hostile() -> AsyncIterator[Hostile]:
    h = Hostile(bomb=await asyncio.to_thread(_gzip_bomb))
    app = web.Application()
    app.router.add_get("/v2/endless/manifests/{ref}", h.endless)
    app.router.add_get("/v2/bomb/manifests/{ref}", h.bomb_handler)
    app.router.add_get("/v2/probe/manifests/{ref}", h.auth_probe)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    h.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield h
    await runner.cleanup()


async def _peak_during(coro: object) -> tuple[BaseException | None, int]:
    tracemalloc.start()
    try:
        try:
            await coro  # type: ignore[misc]
            raised: BaseException | None = None
        except errors.NarwhalError as exc:
            raised = exc
        return raised, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("status", ["200", "500"])
async def test_endless_manifest_or_error_body_is_cut(hostile: Hostile, status: str) -> None:
    ref = reference.parse(f"127.0.0.1:{hostile.port}/endless:v1")
    async with RegistrySession(ref, RegistryConfig()) as s:
        # The query string picks the status (the manifest URL ends with the reference).
        raised, peak = await _peak_during(asyncio.wait_for(s.fetch_manifest(s.endpoints[0], f"v1?status={status}"),
                                                           30))
    assert isinstance(raised, errors.InvalidArgument if status == "200" else errors.Unavailable)
    assert peak < 32 << 20, f"peak {peak >> 20} MiB"


@pytest.mark.parametrize("status", ["200", "500"])
async def test_gzip_bomb_is_never_inflated(hostile: Hostile, status: str) -> None:
    ref = reference.parse(f"127.0.0.1:{hostile.port}/bomb:v1")
    async with RegistrySession(ref, RegistryConfig()) as s:
        raised, peak = await _peak_during(s.fetch_manifest(s.endpoints[0], f"v1?status={status}"))
    assert raised is not None or status == "200"
    assert peak < 32 << 20, f"peak {peak >> 20} MiB"  # the bomb inflates to 256 MiB


async def test_credentials_never_go_to_a_mirror(hostile: Hostile) -> None:
    mirror = f"http://127.0.0.1:{hostile.port}"
    cfg = RegistryConfig(mirrors={"example.invalid": [mirror]})
    ref = reference.parse("example.invalid/probe:v1")
    async with RegistrySession(ref, cfg, RegistryAuth(username="u", password="secret")) as s:
        with pytest.raises(errors.NarwhalError):
            await s.fetch_manifest(s.endpoints[0], "v1")
    assert hostile.seen_auth and all(a == "" for a in hostile.seen_auth)


async def test_credentials_go_to_the_registry_they_were_given_for(hostile: Hostile) -> None:
    ref = reference.parse(f"127.0.0.1:{hostile.port}/probe:v1")
    async with RegistrySession(ref, RegistryConfig(), RegistryAuth(username="u", password="secret")) as s:
        with pytest.raises(errors.Unauthenticated):
            await s.fetch_manifest(s.endpoints[0], "v1")
    assert hostile.seen_auth[-1].startswith("Basic ")


def test_no_credentials_in_clear_text_to_other_hosts() -> None:
    assert not may_carry_credentials(Endpoint("http://registry.example:5000", "registry.example:5000"))
    assert not may_carry_credentials(Endpoint("https://mirror.example", "mirror.example", mirror=True))
    assert may_carry_credentials(Endpoint("https://registry.example", "registry.example"))
    assert may_carry_credentials(Endpoint("https://registry.example", "registry.example", verify_tls=False))
    assert may_carry_credentials(Endpoint("http://127.0.0.1:5000", "127.0.0.1:5000"))
    assert not _safe_realm("http://auth.example/token") and _safe_realm("https://auth.example/token")
    assert _safe_realm("http://127.0.0.1:8080/token") and not _safe_realm("file:///etc/passwd")
