"""dockerapi.params: the one reader of Docker query flags, JSON request bodies and the typed pieces inside them."""
from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from dockerapi import params
from pkg import errors

Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    async def echo(request: web.Request) -> web.Response:
        try:
            return web.json_response(await params.json_object(request))
        except errors.InvalidArgument as exc:
            return web.json_response({"error": exc.message}, status=400)

    async def flags(request: web.Request) -> web.Response:
        try:
            return web.json_response({"force": params.query_bool(request, "force"),
                                      "stream": params.query_bool(request, "stream", default=True),
                                      "h": params.query_int(request, "h"),
                                      "t": params.query_opt_int(request, "t", "timeout")})
        except errors.InvalidArgument as exc:
            return web.json_response({"error": exc.message}, status=400)

    app = web.Application()
    app.router.add_post("/echo", echo)
    app.router.add_get("/flags", flags)
    async with TestClient(TestServer(app)) as c:
        yield c


@pytest.mark.parametrize("data, expected", [
    (None, {}), (b"", {}), (b"  \n", {}), (b"null", {}), (b'{"Name": "x"}', {"Name": "x"}),
])
async def test_json_object(client: Client, data: bytes | None, expected: dict[str, Any]) -> None:
    resp = await client.post("/echo", data=data)
    assert resp.status == 200 and await resp.json() == expected


@pytest.mark.parametrize("data, message", [(b"{not json", "invalid JSON: "), (b"[1]", "must be an object")])
async def test_json_object_refuses(client: Client, data: bytes, message: str) -> None:
    resp = await client.post("/echo", data=data)
    assert resp.status == 400 and message in (await resp.json())["error"]


@pytest.mark.parametrize("query, expected", [
    ("", {"force": False, "stream": True, "h": 0, "t": None}),
    ("force=1&stream=0&h=24&t=0", {"force": True, "stream": False, "h": 24, "t": 0}),
    ("force=yes&stream=none&timeout=7", {"force": True, "stream": False, "h": 0, "t": 7}),  # the older name
    ("t=3&timeout=9", {"force": False, "stream": True, "h": 0, "t": 3}),  # the current name wins
    ("force=False&stream=&h=&t=", {"force": False, "stream": False, "h": 0, "t": None}),  # present but empty
])
async def test_query_values(client: Client, query: str, expected: dict[str, Any]) -> None:
    resp = await client.get(f"/flags?{query}")
    assert resp.status == 200 and await resp.json() == expected


async def test_query_int_refuses_words(client: Client) -> None:
    resp = await client.get("/flags?h=tall")
    assert resp.status == 400 and (await resp.json())["error"] == "invalid value for h: 'tall'"
    resp = await client.get("/flags?timeout=soon")
    assert resp.status == 400 and (await resp.json())["error"] == "invalid value for t: 'soon'"


def test_typed_pieces() -> None:
    assert params.mapping(None, "IPAM") == {} and params.mapping({"a": 1}, "IPAM") == {"a": 1}
    assert params.string_map({"k": "v"}, "Labels") == {"k": "v"} and params.string_map(None, "Labels") == {}
    assert params.string_list("ls", "Cmd") == ("ls",) and params.string_list(["a", "b"], "Cmd") == ("a", "b")
    assert params.string_list(None, "Cmd") == ()
    with pytest.raises(errors.InvalidArgument, match="^IPAM must be an object$"):
        params.mapping([], "IPAM")
    with pytest.raises(errors.InvalidArgument, match="^Labels must be an object of strings$"):
        params.string_map({"k": 1}, "Labels")
    with pytest.raises(errors.InvalidArgument, match="^Env must be a list of strings$"):
        params.string_list(["A=1", 2], "Env")
