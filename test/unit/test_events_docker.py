"""Docker GET /events over a real aiohttp server: JSON shape, since/until, filters, bad input."""
from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from dockerapi import filters as docker_filters
from dockerapi import times
from dockerapi.backend import Backends
from dockerapi.handlers.events import ACCEPTED_FILTERS, EventFilter
from dockerapi.server import build_app
from pkg import errors
from pkg.events import DockerEvent, EventBus
from pkg.metrics import Metrics
from pkg.system import HostInfo, VersionInfo

# dockerapi/middleware.py stores the API version under a str request key (not ours to change here).

Client = TestClient[web.Request, web.Application]


class _System:
    async def version(self) -> VersionInfo:
        raise NotImplementedError

    async def info(self) -> HostInfo:
        raise NotImplementedError


@pytest.fixture
async def bus_client() -> AsyncIterator[tuple[EventBus, Client]]:
    bus = EventBus()
    app = build_app(Backends(system=_System(), metrics=Metrics(), events=bus))
    async with TestClient(TestServer(app)) as client:
        yield bus, client


def _lines(body: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in body.splitlines() if line]


async def test_until_in_the_past_returns_history_and_closes(bus_client: tuple[EventBus, Client]) -> None:
    bus, client = bus_client
    bus.publish_docker("container", "start", "a" * 64, {"image": "busybox", "name": "web"})
    bus.publish_docker("image", "pull", "busybox:latest", {"name": "busybox"})
    until = str(time.time_ns() / 1e9 + 0.001)
    resp = await client.get("/v1.44/events", params={"since": "0", "until": until})
    assert resp.status == 200 and resp.headers["Content-Type"] == "application/json"
    container, image = _lines(await resp.read())
    assert container == {
        "status": "start", "id": "a" * 64, "from": "busybox", "Type": "container", "Action": "start",
        "Actor": {"ID": "a" * 64, "Attributes": {"image": "busybox", "name": "web"}}, "scope": "local",
        "time": container["timeNano"] // 1_000_000_000, "timeNano": container["timeNano"],
    }
    assert image["status"] == "pull" and "from" not in image and image["Type"] == "image"


async def test_filters_select_by_type_and_container_name(bus_client: tuple[EventBus, Client]) -> None:
    bus, client = bus_client
    bus.publish_docker("container", "create", "b" * 64, {"name": "db"})
    bus.publish_docker("container", "create", "c" * 64, {"name": "web"})
    bus.publish_docker("network", "create", "n" * 64, {"name": "web", "type": "bridge"})
    filters = json.dumps({"type": {"container": True}, "container": {"web": True}})
    resp = await client.get("/events", params={"since": "0", "until": "0.000000001", "filters": filters})
    assert _lines(await resp.read()) == []  # until before anything happened
    resp = await client.get("/events", params={"since": "1h", "until": str(time.time() + 0.01), "filters": filters})
    assert [e["id"] for e in _lines(await resp.read())] == ["c" * 64]


async def test_live_stream_then_until_ends_it(bus_client: tuple[EventBus, Client]) -> None:
    bus, client = bus_client
    until = time.time() + 1.0
    resp = await client.get("/events", params={"until": f"{until:.9f}"})
    assert resp.status == 200  # headers arrive before any event
    bus.publish_docker("volume", "create", "vol1", {"driver": "local"})
    line = await asyncio.wait_for(resp.content.readline(), 5)
    assert json.loads(line)["Actor"]["ID"] == "vol1"
    assert await asyncio.wait_for(resp.content.read(), 10) == b""  # closed at `until`


async def test_since_in_the_future_holds_back_earlier_events(bus_client: tuple[EventBus, Client]) -> None:
    bus, client = bus_client
    now = time.time()
    resp = await client.get("/events", params={"since": f"{now + 0.5:.9f}", "until": f"{now + 1.5:.9f}"})
    bus.publish_docker("volume", "create", "early", {})
    await asyncio.sleep(0.7)
    bus.publish_docker("volume", "create", "late", {})
    body = await asyncio.wait_for(resp.content.read(), 10)
    assert [e["Actor"]["ID"] for e in _lines(body)] == ["late"]


async def test_a_client_that_goes_away_releases_its_subscription(
        bus_client: tuple[EventBus, Client]) -> None:
    bus, client = bus_client
    resp = await client.get("/events")
    assert bus.subscribers == 1
    resp.close()
    for _ in range(50):
        if bus.subscribers == 0:
            break
        await asyncio.sleep(0.1)
    assert bus.subscribers == 0


@pytest.mark.parametrize("params, message", [
    ({"filters": "{not json"}, "invalid filter"),
    ({"filters": json.dumps({"colour": ["red"]})}, "invalid filter 'colour'"),
    ({"since": "yesterday"}, "failed to parse value as time or duration"),
    ({"since": "100", "until": "50"}, "`since` time must be before `until`"),
])
async def test_bad_queries_are_400_with_a_message(bus_client: tuple[EventBus, Client],
                                                  params: dict[str, str], message: str) -> None:
    _, client = bus_client
    resp = await client.get("/events", params=params)
    assert resp.status == 400
    assert message in (await resp.json())["message"]


def test_parse_time_forms() -> None:
    now = 1_700_000_000 * 10**9
    assert times.timestamp("1700000000", now) == now
    assert times.timestamp("1700000000.5", now) == now + 500_000_000
    assert times.timestamp("10m", now) == now - 600 * 10**9
    assert times.timestamp("1h30m", now) == now - 5400 * 10**9
    assert times.timestamp("2023-11-14T22:13:20Z", now) == now
    assert times.timestamp("2023-11-14T22:13:20.25+00:00", now) == now + 250_000_000
    assert times.timestamp("2023-11-14T23:13:20.123456789+01:00", now) == now + 123_456_789
    with pytest.raises(errors.InvalidArgument):
        times.timestamp("10 minutes", now)


def test_filter_semantics_follow_moby() -> None:
    def ev(type_: str, action: str, actor: str, **attrs: str) -> DockerEvent:
        return DockerEvent(type_, action, actor, attrs, 1)

    started = ev("container", "start", "abcdef", name="web", image="busybox:1.36", tier="front")
    exec_start = ev("container", "exec_start: sh -c true", "abcdef", name="web", image="busybox:1.36")
    pulled = ev("image", "pull", "busybox:1.36", name="busybox:1.36")

    def f(**filters: list[str]) -> EventFilter:
        return EventFilter(filters)

    assert f(container=["abc"])(started) and f(container=["we"])(started) and not f(container=["db"])(started)
    assert not f(container=["abc"])(pulled)  # moby applies name filters to every event type
    assert f(image=["busybox"])(started) and f(image=["busybox:1.36"])(pulled) and not f(image=["alp"])(started)
    assert f(label=["tier"])(started) and f(label=["tier=front"])(started) and not f(label=["tier=back"])(started)
    assert f(event=["exec_start"])(exec_start) and not f(event=["start"])(exec_start)
    assert f(type=["image", "volume"])(pulled) and not f(type=["container"])(pulled)
    raw = '{"type": ["container"], "event": {"die": true, "start": false}}'
    assert docker_filters.parse(raw, ACCEPTED_FILTERS) == {"type": ["container"], "event": ["die"]}
