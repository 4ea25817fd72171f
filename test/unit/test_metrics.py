"""Metrics: names and types (promtool), the call-site helpers, the containerd interceptor, Docker route labels."""
from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from dockerapi.backend import Backends
from dockerapi.server import build_app
from pkg import errors
from pkg import metrics as metrics_mod
from pkg.containerd.api.services.version.v1 import version_pb2
from pkg.containerd.client import Client
from pkg.events import EventBus
from pkg.metrics import Metrics
from pkg.system import HostInfo, VersionInfo

PROMTOOL = shutil.which("promtool")


@pytest.fixture
def metrics() -> Iterator[Metrics]:
    m = Metrics()
    metrics_mod.install(m)
    yield m
    metrics_mod.install(Metrics())  # later tests must not report into this one


def sample(m: Metrics, name: str, **labels: str) -> float:
    value = m.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def promtool_check(exposition: bytes) -> str:
    """promtool's complaints about an exposition ("" when clean)."""
    assert PROMTOOL is not None, "promtool is missing: run `make setup` (Debian package prometheus)"
    done = subprocess.run([PROMTOOL, "check", "metrics"], input=exposition, capture_output=True, timeout=60)
    return (done.stdout + done.stderr).decode().strip()


class _Service:
    """Stands in for ContainerService/SandboxService: the decorator only reads ``ctx.domain``."""

    class _Ctx:
        def __init__(self, domain: str) -> None:
            self.domain = domain

    def __init__(self, domain: str) -> None:
        self.ctx = self._Ctx(domain)

    @metrics_mod.lifecycle("container", "start")
    async def start(self, fail: bool) -> str:
        if fail:
            raise errors.FailedPrecondition("not created")
        return "ok"


async def test_lifecycle_decorator_times_actions_per_frontend_and_counts_failures(metrics: Metrics) -> None:
    assert await _Service("").start(False) == "ok"
    assert await _Service("docker").start(False) == "ok"
    with pytest.raises(errors.FailedPrecondition):
        await _Service("docker").start(True)
    labels = {"object": "container", "action": "start"}
    assert sample(metrics, "narwhal_lifecycle_duration_seconds_count", frontend="cri", **labels) == 1
    assert sample(metrics, "narwhal_lifecycle_duration_seconds_count", frontend="docker", **labels) == 2
    assert sample(metrics, "narwhal_lifecycle_errors_total", frontend="docker", kind="failed_precondition",
                  **labels) == 1
    assert sample(metrics, "narwhal_lifecycle_errors_total", frontend="cri", kind="failed_precondition",
                  **labels) == 0


def test_pull_tracks_in_progress_duration_and_result(metrics: Metrics) -> None:
    with metrics.pull():
        assert sample(metrics, "narwhal_image_pulls_in_progress") == 1
    with pytest.raises(errors.Unauthenticated), metrics.pull():
        raise errors.Unauthenticated("no")
    assert sample(metrics, "narwhal_image_pulls_in_progress") == 0
    assert sample(metrics, "narwhal_image_pulls_total", result="success") == 1
    assert sample(metrics, "narwhal_image_pulls_total", result="unauthenticated") == 1
    assert sample(metrics, "narwhal_image_pull_duration_seconds_count") == 1  # successes only


def test_state_gauges_are_read_from_the_sources_at_scrape_time(metrics: Metrics) -> None:
    containers = ["running", "running", "exited"]
    metrics.watch_states("cri", lambda: containers, lambda: ["ready"])
    assert sample(metrics, "narwhal_containers", frontend="cri", state="running") == 2
    assert sample(metrics, "narwhal_containers", frontend="cri", state="created") == 0  # every state is reported
    containers.remove("running")
    assert sample(metrics, "narwhal_containers", frontend="cri", state="running") == 1
    assert sample(metrics, "narwhal_sandboxes", frontend="cri", state="ready") == 1


def test_log_totals_come_from_logger_stats_files_and_survive_removal(metrics: Metrics, tmp_path: Path) -> None:
    files = {"a": tmp_path / "a.stats", "b": tmp_path / "b.stats"}
    files["a"].write_text("100 4\n")
    files["b"].write_text("50 1\n")
    metrics.watch_logs("docker", lambda: list(files.values()))
    assert sample(metrics, "narwhal_container_log_bytes_total", frontend="docker") == 150
    assert sample(metrics, "narwhal_container_log_lines_total", frontend="docker") == 5
    metrics.retire_logs("docker", files["a"])  # container a is removed: its totals stay counted, once
    assert not files["a"].exists()
    del files["a"]
    files["b"].write_text("60 2\n")
    assert sample(metrics, "narwhal_container_log_bytes_total", frontend="docker") == 160
    assert sample(metrics, "narwhal_container_log_lines_total", frontend="docker") == 6
    metrics.retire_logs("docker", tmp_path / "never-written.stats")  # a container that logged nothing
    assert sample(metrics, "narwhal_container_log_lines_total", frontend="docker") == 6


def test_exposition_passes_promtool_with_every_metric_in_use(metrics: Metrics) -> None:
    bus = EventBus()
    metrics.watch_states("cri", lambda: ["running"], lambda: ["ready"])
    metrics.watch_bus(lambda: bus.published, lambda: bus.subscribers)
    metrics.cri_requests.labels(method="Version", code="OK").inc()
    metrics.cri_latency.labels(method="Version").observe(0.001)
    metrics.docker_requests.labels(route="/events", method="GET", status="200").inc()
    metrics.docker_latency.labels(route="/events", method="GET", status="200").observe(0.2)
    metrics.containerd_latency.labels(service="Tasks", method="Create").observe(0.01)
    metrics.containerd_errors.labels(service="Tasks", method="Get", code="NOT_FOUND").inc()
    with metrics.cni_call("ADD", "bridge"):
        pass
    with metrics.pull():
        metrics.pull_bytes.inc(1234)
    metrics.oom_kills.labels(frontend="cri").inc()
    metrics.watch_logs("cri", list)
    metrics.execs.inc()
    text = metrics.render()
    assert promtool_check(text) == ""
    names = {f.name for f in text_string_to_metric_families(text.decode())}
    ours = {n for n in names if n.startswith("narwhal_")}
    assert {"process_cpu_seconds", "process_resident_memory_bytes"} <= names  # process collector
    assert {"narwhal_containers", "narwhal_sandboxes", "narwhal_events_published", "narwhal_image_pull_bytes",
            "narwhal_cni_operation_duration_seconds", "narwhal_containerd_request_duration_seconds"} <= ours


def test_every_narwhal_metric_is_documented() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "metrics.md").read_text()
    m = Metrics()
    m.watch_states("cri", list, list)
    m.watch_bus(lambda: 0, lambda: 0)
    for family in text_string_to_metric_families(m.render().decode()):
        if family.name.startswith("narwhal_"):
            shown = family.name + ("_total" if family.type == "counter" else "")
            assert f"`{shown}`" in doc, f"{shown} is not in docs/metrics.md"


# ---- containerd calls: a real grpc.aio server on a unix socket ----
class _VersionService(grpc.GenericRpcHandler):
    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        if details.method == "/containerd.services.version.v1.Version/Version":
            async def ok(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
                return version_pb2.VersionResponse(version="1.6.20").SerializeToString()
            return grpc.unary_unary_rpc_method_handler(ok)
        if details.method == "/containerd.services.tasks.v1.Tasks/Get":
            async def missing(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
                await context.abort(grpc.StatusCode.NOT_FOUND, "no task")
                raise AssertionError("unreachable")
            return grpc.unary_unary_rpc_method_handler(missing)
        return None


@pytest.fixture
async def fake_containerd(tmp_path: Path) -> AsyncIterator[Path]:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([_VersionService()])
    socket = tmp_path / "c.sock"
    server.add_insecure_port(f"unix://{socket}")
    await server.start()
    yield socket
    await server.stop(0)


async def test_containerd_calls_are_timed_and_failures_counted_by_code(
        metrics: Metrics, fake_containerd: Path) -> None:
    from pkg.containerd.api.services.tasks.v1 import tasks_pb2

    client = Client(fake_containerd, "narwhal")
    try:
        assert (await client.version())[0] == "1.6.20"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await client.tasks.Get(tasks_pb2.GetRequest(container_id="x"))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND  # the caller still sees the error
    finally:
        await client.close()
    assert sample(metrics, "narwhal_containerd_request_duration_seconds_count", service="Version",
                  method="Version") == 1
    assert sample(metrics, "narwhal_containerd_request_duration_seconds_count", service="Tasks", method="Get") == 1
    assert sample(metrics, "narwhal_containerd_request_errors_total", service="Tasks", method="Get",
                  code="NOT_FOUND") == 1


# ---- Docker API: route templates, not paths ----
class _System:
    async def version(self) -> VersionInfo:
        raise errors.Unavailable("no")

    async def info(self) -> HostInfo:
        raise errors.Unavailable("no")


async def test_docker_requests_are_labelled_by_route_template_method_and_status(metrics: Metrics) -> None:
    app = build_app(Backends(system=_System(), metrics=metrics, events=EventBus()))
    async with TestClient(TestServer(app)) as client:
        for path in ("/v1.44/events?filters=nope", "/events?filters=nope", "/v1.44/no/such/route"):
            resp = await client.get(path)
            assert resp.status in (400, 404)
            assert len(resp.headers["X-Request-Id"]) == 16
        await asyncio.sleep(0)
    assert sample(metrics, "narwhal_docker_requests_total", route="/events", method="GET", status="400") == 2
    assert sample(metrics, "narwhal_docker_request_duration_seconds_count", route="/events", method="GET",
                  status="400") == 2
    assert sample(metrics, "narwhal_docker_requests_total", route="unmatched", method="GET", status="404") == 1


async def test_render_async_reads_the_stores_on_the_loop_and_renders_in_a_thread(
        metrics: Metrics, tmp_path: Path) -> None:
    import threading

    loop_thread = threading.get_ident()
    seen: list[int] = []

    def containers() -> list[str]:
        seen.append(threading.get_ident())
        return ["running"]

    stats = tmp_path / "c.stats"
    stats.write_text("7 1\n")
    metrics.watch_states("cri", containers, list)
    metrics.watch_logs("cri", lambda: [stats])
    text = (await metrics.render_async()).decode()
    assert seen == [loop_thread]
    assert 'narwhal_containers{frontend="cri",state="running"} 1.0' in text
    assert 'narwhal_container_log_bytes_total{frontend="cri"} 7.0' in text
    assert metrics.live.pinned is None
