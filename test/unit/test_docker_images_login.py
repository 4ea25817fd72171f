"""docker login (pkg.images.login) against an in-process registry: basic, bearer, none; refusals are 401s."""
from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from pkg import errors
from pkg.config import RegistryConfig
from pkg.images.login import LOGIN_SUCCEEDED, login, search
from pkg.images.model import RegistryAuth

GOOD = "Basic " + base64.b64encode(b"bob:hunter2").decode()


def _app(scheme: str) -> web.Application:
    async def v2(request: web.Request) -> web.Response:
        header = request.headers.get("Authorization", "")
        if scheme == "none" or (scheme == "basic" and header == GOOD) or \
                (scheme == "bearer" and header == "Bearer tok-1"):
            return web.json_response({})
        if scheme == "basic":
            challenge = 'Basic realm="test"'
        else:
            challenge = f'Bearer realm="http://{request.host}/token",service="test"'
        return web.json_response({"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
                                 status=401, headers={"WWW-Authenticate": challenge})

    async def token(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != GOOD:
            return web.json_response({"details": "wrong username or password"}, status=401)
        return web.json_response({"token": "tok-1", "expires_in": 300})

    app = web.Application()
    app.router.add_get("/v2/", v2)
    app.router.add_get("/token", token)
    return app


@pytest.fixture(params=["none", "basic", "bearer"])
async def server(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, str]]:
    srv = TestServer(_app(request.param), host="127.0.0.1")
    await srv.start_server()
    try:
        yield request.param, f"127.0.0.1:{srv.port}"
    finally:
        await srv.close()


async def test_login(server: tuple[str, str]) -> None:
    scheme, host = server
    cfg = RegistryConfig()
    good = RegistryAuth(username="bob", password="hunter2", server_address=f"http://{host}/v2/")
    assert await login(cfg, good) == LOGIN_SUCCEEDED
    bad = RegistryAuth(username="bob", password="nope", server_address=host)
    if scheme == "none":
        assert await login(cfg, bad) == LOGIN_SUCCEEDED  # a registry without auth accepts anyone
        return
    with pytest.raises(errors.Unauthenticated) as refused:
        await login(cfg, bad)
    expected = "wrong username or password" if scheme == "bearer" else "authentication required"
    assert expected in refused.value.message


async def test_login_to_nothing_is_unavailable() -> None:
    with pytest.raises(errors.Unavailable):
        await login(RegistryConfig(), RegistryAuth(username="u", password="p", server_address="127.0.0.1:1"))


async def test_search_a_registry_v1_index() -> None:
    async def handler(request: web.Request) -> web.Response:
        assert request.query["q"] == "bus" and request.query["n"] == "2"
        return web.json_response({"results": [
            {"name": "busybox", "description": "tiny", "star_count": 3, "is_official": True},
            {"name": "x/busy", "star_count": 0, "is_automated": True}]})

    app = web.Application()
    app.router.add_get("/v1/search", handler)
    srv = TestServer(app, host="127.0.0.1")
    await srv.start_server()
    try:
        results = await search(RegistryConfig(), f"127.0.0.1:{srv.port}/bus", 2)
    finally:
        await srv.close()
    assert [(r.name, r.star_count, r.is_official, r.is_automated) for r in results] == [
        ("busybox", 3, True, False), ("x/busy", 0, False, True)]
    with pytest.raises(errors.InvalidArgument):
        await search(RegistryConfig(), "x", 0)
