"""The Docker app in-process over small fakes of dockerapi.backends' Protocols (no daemon, no type: ignore).

The handlers depend only on the Protocols, so a fake that type-checks is all a router needs: these check
what the volume handlers hand the backend (parsed bodies, filters, moby's per-version prune default) and how
its answers and errors come back (JSON shapes, status codes, a backend the daemon did not wire).
"""
from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from dockerapi.backend import Backends
from dockerapi.backends import (
    AttachStdio,
    ContainerBackend,
    ContainerIOBackend,
    ImageUser,
    LogEntry,
    ReadOptions,
    Sample,
    SystemBackend,
    Top,
    VolumeBackend,
    WaitCondition,
    WaitResult,
)
from dockerapi.hijack import parse_frames
from dockerapi.server import build_app
from pkg import errors
from pkg.docker.engine.model import (
    ContainerSpec,
    EndpointSpec,
    EngineContainer,
    EngineRecord,
    HostConfig,
    Resources,
    RestartPolicy,
)
from pkg.docker.volumes.model import Volume, VolumeFilter, VolumeUsage
from pkg.metrics import Metrics
from pkg.model.container import ContainerStatus
from pkg.model.state import ContainerState
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


# ---- one container's running side: the engine looks it up, the domain's IO backend serves it ----
CID = "c" * 64


class FakeEngine:
    """A ContainerBackend that knows one running container, "web"; the verbs these tests do not use refuse."""

    def __init__(self) -> None:
        self.container = EngineContainer(
            EngineRecord(id=CID, name="web", sandbox_id="s" * 64, owns_sandbox=True, image_id="sha256:" + "i" * 64,
                         created=1, config=ContainerSpec(image="busybox"), host_config=HostConfig()),
            ContainerStatus(ContainerState.RUNNING))

    def get(self, ref: str) -> EngineContainer:
        if ref.lstrip("/") not in ("web", CID):
            raise errors.NotFound(f"No such container: {ref}")
        return self.container

    def list(self) -> builtins.list[EngineContainer]:
        return [self.container]

    async def inspect(self, ref: str) -> EngineContainer:
        return self.get(ref)

    async def sizes(self, view: EngineContainer) -> tuple[int, int]:
        return 0, 0

    def sandbox_paths(self, view: EngineContainer) -> tuple[str, str]:
        return "", ""

    async def create(self, spec: ContainerSpec, host: HostConfig, name: str = "") -> str:
        raise errors.NotImplementedYet("create")

    async def remove(self, ref: str, force: bool = False, volumes: bool = False) -> None:
        raise errors.NotImplementedYet("remove")

    async def remove_link(self, path: str) -> None:
        raise errors.NotImplementedYet("remove_link")

    async def prune(self, keep: Callable[[EngineContainer], bool]) -> builtins.list[str]:
        return []

    async def rename(self, ref: str, new_name: str) -> None:
        raise errors.NotImplementedYet("rename")

    async def update(self, ref: str, resources: Resources | None = None,
                     restart_policy: RestartPolicy | None = None) -> builtins.list[str]:
        raise errors.NotImplementedYet("update")

    async def start(self, ref: str) -> bool:
        raise errors.NotImplementedYet("start")

    async def stop(self, ref: str, sig: str | None = None, timeout: int | None = None) -> bool:
        raise errors.NotImplementedYet("stop")

    async def kill(self, ref: str, sig: str | None = None) -> None:
        raise errors.NotImplementedYet("kill")

    async def restart(self, ref: str, sig: str | None = None, timeout: int | None = None) -> None:
        raise errors.NotImplementedYet("restart")

    async def pause(self, ref: str) -> None:
        raise errors.NotImplementedYet("pause")

    async def unpause(self, ref: str) -> None:
        raise errors.NotImplementedYet("unpause")

    async def wait(self, ref: str, condition: WaitCondition = WaitCondition.NOT_RUNNING) -> WaitResult:
        raise errors.NotImplementedYet("wait")

    async def set_endpoint(self, ref: str, network: str, spec: EndpointSpec | None) -> None:
        raise errors.NotImplementedYet("set_endpoint")


class FakeIO:
    """A ContainerIOBackend with a two-line log, a fixed ps table, and a record of resizes."""

    def __init__(self) -> None:
        self.resized: builtins.list[tuple[str, int, int]] = []
        self.read_with: builtins.list[ReadOptions] = []

    def exists(self, container_id: str) -> bool:
        return container_id == CID

    def running(self, container_id: str) -> bool:
        return True

    def tty(self, container_id: str) -> bool:
        return False

    def image_of(self, container_id: str) -> str:
        return "sha256:" + "i" * 64

    def event(self, action: str, container_id: str) -> None:
        return None

    def attach(self, container_id: str, since_ns: int | None) -> AttachStdio:
        raise errors.NotImplementedYet("attach")

    async def logs(self, container_id: str, options: ReadOptions) -> AsyncIterator[LogEntry]:
        self.read_with.append(options)
        for entry in (LogEntry(1, "stdout", b"out\n"), LogEntry(2, "stderr", b"err\n")):
            if entry.stream in options.streams:
                yield entry

    async def resize(self, container_id: str, height: int, width: int) -> None:
        self.resized.append((container_id, height, width))

    async def stats(self, container_id: str) -> Sample:
        raise errors.NotImplementedYet("stats")

    async def top(self, container_id: str, ps_args: str) -> Top:
        return Top(["PID", "CMD", "ARGS"], [["1", "sleep", ps_args]])

    def image_users(self) -> builtins.list[ImageUser]:
        return []

    def stopped(self) -> builtins.list[str]:
        return []

    async def layer_sizes(self, container_ids: builtins.list[str]) -> dict[str, int]:
        return {}


def _conforms_io(engine: FakeEngine, io: FakeIO) -> tuple[ContainerBackend, ContainerIOBackend]:
    return engine, io


@pytest.fixture
def io() -> FakeIO:
    return FakeIO()


@pytest.fixture
async def running(io: FakeIO) -> AsyncIterator[Client]:
    engine, core = _conforms_io(FakeEngine(), io)
    backends = Backends(system=_System(), metrics=Metrics(), engine=engine, io=core)
    async with TestClient(TestServer(build_app(backends))) as c:
        yield c


async def test_top_logs_resize_reach_the_io_backend_by_the_engines_id(running: Client, io: FakeIO) -> None:
    top = await (await running.get("/v1.44/containers/web/top?ps_args=-ef")).json()
    assert top == {"Titles": ["PID", "CMD", "ARGS"], "Processes": [["1", "sleep", "-ef"]]}
    resp = await running.get("/v1.44/containers/web/logs?stdout=1&stderr=1&tail=5")
    assert resp.status == 200
    assert parse_frames(await resp.read()) == [(1, b"out\n"), (2, b"err\n")]  # stdcopy-framed: no TTY
    assert io.read_with[0].tail == 5 and io.read_with[0].streams == frozenset({"stdout", "stderr"})
    assert (await running.post("/v1.44/containers/web/resize?h=24&w=80")).status == 200
    assert io.resized == [(CID, 24, 80)]


async def test_unknown_container_and_bad_numbers_never_reach_the_io_backend(running: Client, io: FakeIO) -> None:
    resp = await running.get("/v1.44/containers/nope/top")
    assert resp.status == 404 and (await resp.json()) == {"message": "No such container: nope"}
    resp = await running.post("/v1.44/containers/web/resize?h=tall&w=80")
    assert resp.status == 400 and (await resp.json()) == {"message": "invalid value for h: 'tall'"}
    resp = await running.get("/v1.44/containers/web/logs")
    assert resp.status == 400 and "choose at least one stream" in (await resp.json())["message"]
    assert io.resized == [] and io.read_with == []
