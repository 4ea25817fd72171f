"""The Docker app in-process over small fakes of dockerapi.backends' Protocols (no daemon, no type: ignore).

The handlers depend only on the Protocols, so a fake that type-checks is all a router needs: these check
what the volume handlers hand the backend (parsed bodies, filters, moby's per-version prune default) and how
its answers and errors come back (JSON shapes, status codes, a backend the daemon did not wire).
"""
from __future__ import annotations

import builtins
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from dockerapi.backend import Backends
from dockerapi.backends import SystemBackend, VolumeBackend
from dockerapi.server import build_app
from pkg import errors
from pkg.docker.volumes.model import Volume, VolumeFilter, VolumeUsage
from pkg.metrics import Metrics
from pkg.system import HostInfo, VersionInfo

Client = TestClient[web.Request, web.Application]


class _System:
    async def version(self) -> VersionInfo:
        raise errors.Unavailable("not in this test")

    async def info(self) -> HostInfo:
        raise errors.Unavailable("not in this test")


class FakeVolumes:
    """An in-memory VolumeBackend that records the filters and flags it was called with."""

    def __init__(self) -> None:
        self.volumes: dict[str, Volume] = {}
        self.calls: list[tuple[str, object]] = []

    async def create(self, name: str = "", driver: str = "", options: dict[str, str] | None = None,
                     labels: dict[str, str] | None = None) -> Volume:
        name = name or f"anon{len(self.volumes)}"
        volume = Volume(name, f"/v/{name}/_data", "2026-01-02T03:04:05Z", driver or "local", dict(labels or {}),
                        dict(options or {}))
        self.volumes.setdefault(name, volume)
        return self.volumes[name]

    def get(self, name: str) -> Volume:
        if name not in self.volumes:
            raise errors.NotFound(f"get {name}: no such volume")
        return self.volumes[name]

    def list(self, flt: VolumeFilter | None = None) -> builtins.list[Volume]:
        self.calls.append(("list", flt))
        return [v for v in self.volumes.values() if flt is None or not flt.drivers or v.driver in flt.drivers]

    async def remove(self, name: str, force: bool = False) -> None:
        self.calls.append(("remove", force))
        self.get(name)
        del self.volumes[name]

    async def prune(self, flt: VolumeFilter | None = None,
                    all_volumes: bool = False) -> tuple[builtins.list[str], int]:
        self.calls.append(("prune", all_volumes))
        return [], 0

    async def usage(self) -> dict[str, VolumeUsage]:
        return {}


def _conforms(system: _System, volumes: FakeVolumes) -> tuple[SystemBackend, VolumeBackend]:
    return system, volumes  # mypy: the fakes meet the Protocols the daemon's services meet


@pytest.fixture
def volumes() -> FakeVolumes:
    return FakeVolumes()


@pytest.fixture
async def client(volumes: FakeVolumes) -> AsyncIterator[Client]:
    system, vols = _conforms(_System(), volumes)
    async with TestClient(TestServer(build_app(Backends(system=system, metrics=Metrics(), volumes=vols)))) as c:
        yield c


async def test_create_inspect_list_remove_go_through_the_backend(client: Client, volumes: FakeVolumes) -> None:
    resp = await client.post("/v1.44/volumes/create", json={"Name": "data", "Labels": {"a": "b"},
                                                            "DriverOpts": {"type": "tmpfs"}})
    assert resp.status == 201
    created = await resp.json()
    assert created == {"CreatedAt": "2026-01-02T03:04:05Z", "Driver": "local", "Labels": {"a": "b"},
                       "Mountpoint": "/v/data/_data", "Name": "data", "Options": {"type": "tmpfs"}, "Scope": "local"}
    assert await (await client.get("/v1.44/volumes/data")).json() == created
    listed = await (await client.get('/v1.44/volumes?filters={"driver":["local"]}')).json()
    assert [v["Name"] for v in listed["Volumes"]] == ["data"] and listed["Warnings"] == []
    assert ("list", VolumeFilter(drivers=("local",))) in volumes.calls
    assert (await client.delete("/v1.44/volumes/data?force=1")).status == 204
    assert ("remove", True) in volumes.calls and volumes.volumes == {}


async def test_backend_errors_keep_their_status_and_message(client: Client) -> None:
    resp = await client.get("/v1.44/volumes/nope")
    assert resp.status == 404 and (await resp.json()) == {"message": "get nope: no such volume"}
    resp = await client.post("/v1.44/volumes/create", json={"Labels": ["not", "a", "map"]})
    assert resp.status == 400 and "Labels" in (await resp.json())["message"]


@pytest.mark.parametrize(("path", "all_volumes"), [
    ("/v1.41/volumes/prune", True),  # before 1.42 a prune took every unused volume
    ("/v1.44/volumes/prune", False),  # since then only anonymous ones...
    ('/v1.44/volumes/prune?filters={"all":["true"]}', True),  # ...unless all=true
])
async def test_prune_default_follows_the_api_version(client: Client, volumes: FakeVolumes, path: str,
                                                     all_volumes: bool) -> None:
    resp = await client.post(path)
    assert resp.status == 200 and await resp.json() == {"VolumesDeleted": [], "SpaceReclaimed": 0}
    assert volumes.calls == [("prune", all_volumes)]


async def test_a_backend_the_daemon_did_not_wire_is_501(client: Client) -> None:
    resp = await client.get("/v1.44/networks")
    assert resp.status == 501 and (await resp.json()) == {"message": "networks is not available in this daemon"}
