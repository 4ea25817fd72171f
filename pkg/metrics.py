"""Prometheus metrics: one registry per daemon, every metric defined here (docs/metrics.md lists them).

A registry per daemon (rather than prometheus_client's global one) keeps
several daemons in one test process from colliding.  Front ends get the
daemon's ``Metrics`` injected; the core's deep call sites (containerd calls,
CNI plugins, pulls, lifecycle methods) reach it through ``current()``, which
the daemon sets with ``install()`` — passing it through every constructor
would thread one more argument through code that has no other use for it.
Until a daemon installs one, ``current()`` is a private, unscraped registry,
so instrumented code never needs a daemon to run (unit tests).

Counts of containers and sandboxes by state are read from the stores at
scrape time (a collector), so they can never drift from the truth.
"""
from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable, Coroutine, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

from pkg import errors
from pkg.logs.writer import read_stats_file
from pkg.model.state import ContainerState, SandboxState
from pkg.promclient import (
    CONTENT_TYPE_LATEST,
    Collector,
    CollectorRegistry,
    Counter,
    CounterMetricFamily,
    Gauge,
    GaugeMetricFamily,
    GCCollector,
    Histogram,
    Metric,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_text,
)
from pkg.version import narwhal_version

__all__ = ["Metrics", "CONTENT_TYPE_LATEST", "current", "install", "frontend_of", "lifecycle", "error_kind"]

# Buckets (seconds): requests are milliseconds to tens of seconds; pulls and lifecycle steps can be minutes.
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
SLOW_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)

# The *_created series prometheus_client adds to every counter and histogram double the exposition for
# nothing Prometheus uses.
disable_created_metrics()

CRI_FRONTEND = "cri"
DOCKER_FRONTEND = "docker"

# A source of (state, count) pairs, read at scrape time: one per front end and object kind.
StateSource = Callable[[], Iterable[str]]


def frontend_of(domain: str) -> str:
    """The front end a runtime domain serves ("" is CRI's)."""
    return domain or CRI_FRONTEND


def error_kind(exc: BaseException) -> str:
    """A low-cardinality label for a failure: the pkg.errors kind, else "internal"."""
    if isinstance(exc, errors.NarwhalError):
        return exc.kind
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    return "internal"


@dataclass(frozen=True)
class _Snapshot:
    """What the live collector reads from the daemon's in-memory state, taken on the event loop."""

    containers: dict[str, list[str]]
    sandboxes: dict[str, list[str]]
    bus: tuple[int, int] | None
    log_files: dict[str, list[Path]]


class _LiveCollector(Collector):
    """Values read at scrape time: containers and sandboxes by {frontend, state} from the stores, the event
    bus's counters, and the container log totals from narwhal-logger's stats files.

    ``render_async`` pins a snapshot of the stores (taken on the event loop, which owns them) and renders
    in a worker thread, so the file reads never block the loop.  The lock keeps a scrape's reads of the
    stats files and a removal's retirement of one (read, add, unlink) from interleaving."""

    def __init__(self) -> None:
        self.containers: dict[str, StateSource] = {}
        self.sandboxes: dict[str, StateSource] = {}
        self.bus_published: Callable[[], int] | None = None
        self.bus_subscribers: Callable[[], int] | None = None
        self.log_stats: dict[str, Callable[[], Iterable[Path]]] = {}
        self.log_retired: dict[str, list[int]] = {}  # frontend -> [bytes, records] of removed containers
        self.lock = threading.Lock()
        self.pinned: _Snapshot | None = None

    def snapshot(self) -> _Snapshot:
        bus = None
        if self.bus_published is not None and self.bus_subscribers is not None:
            bus = (self.bus_published(), self.bus_subscribers())
        return _Snapshot(
            containers={f: list(source()) for f, source in self.containers.items()},
            sandboxes={f: list(source()) for f, source in self.sandboxes.items()},
            bus=bus,
            log_files={f: list(paths()) for f, paths in self.log_stats.items()},
        )

    def collect(self) -> Iterator[Metric]:
        snap = self.pinned or self.snapshot()
        log_bytes = CounterMetricFamily("narwhal_container_log_bytes",
                                        "Bytes written to container log files by narwhal-logger", labels=["frontend"])
        log_lines = CounterMetricFamily("narwhal_container_log_lines",
                                        "Container log records (lines, or chunks of overlong lines) written",
                                        labels=["frontend"])
        for frontend, paths in sorted(snap.log_files.items()):
            with self.lock:
                total = list(self.log_retired.get(frontend, [0, 0]))
                for path in paths:
                    found = read_stats_file(str(path))
                    if found is not None:
                        total[0] += found[0]
                        total[1] += found[1]
            log_bytes.add_metric([frontend], total[0])
            log_lines.add_metric([frontend], total[1])
        yield log_bytes
        yield log_lines
        if snap.bus is not None:
            yield CounterMetricFamily("narwhal_events_published", "Events published on the daemon's bus",
                                      value=snap.bus[0])
            yield GaugeMetricFamily("narwhal_event_subscribers", "Readers of the event bus now (CRI and Docker)",
                                    value=snap.bus[1])
        for name, doc, sources, states in (
            ("narwhal_containers", "Containers by front end and state", snap.containers,
             [s.value for s in ContainerState]),
            ("narwhal_sandboxes", "Pod sandboxes by front end and state", snap.sandboxes,
             [s.value for s in SandboxState]),
        ):
            family = GaugeMetricFamily(name, doc, labels=["frontend", "state"])
            for frontend, values in sorted(sources.items()):
                tally = Tally(values)
                for state in states:
                    family.add_metric([frontend, state], tally.get(state, 0))
            yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._render_lock = asyncio.Lock()
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.build_info = Gauge("narwhal_build_info", "Narwhal build information", ["version"], registry=r)
        self.build_info.labels(version=narwhal_version()).set(1)

        # containerd
        self.containerd_up = Gauge("narwhal_containerd_up", "1 when containerd answers its health check", registry=r)
        self.containerd_restarts = Counter(
            "narwhal_containerd_restarts", "Times the owned containerd was restarted", registry=r)
        self.containerd_latency = Histogram(
            "narwhal_containerd_request_duration_seconds", "containerd gRPC call latency (unary calls)",
            ["service", "method"], buckets=REQUEST_BUCKETS, registry=r)
        self.containerd_errors = Counter(
            "narwhal_containerd_request_errors", "containerd gRPC calls that failed, by gRPC code",
            ["service", "method", "code"], registry=r)

        # front ends
        self.cri_requests = Counter(
            "narwhal_cri_requests", "CRI requests by method and gRPC code (code!=OK: errors)", ["method", "code"],
            registry=r)
        self.cri_latency = Histogram(
            "narwhal_cri_request_duration_seconds", "CRI request latency (unary RPCs)", ["method"],
            buckets=REQUEST_BUCKETS, registry=r)
        self.docker_requests = Counter(
            "narwhal_docker_requests", "Docker API requests by route template, method and HTTP status",
            ["route", "method", "status"], registry=r)
        self.docker_latency = Histogram(
            "narwhal_docker_request_duration_seconds",
            "Docker API request latency by route template and status (streams: until the stream ends)",
            ["route", "method", "status"], buckets=REQUEST_BUCKETS, registry=r)

        # lifecycle
        self.live = _LiveCollector()
        r.register(self.live)
        self.lifecycle_latency = Histogram(
            "narwhal_lifecycle_duration_seconds", "Container and sandbox lifecycle actions, by front end",
            ["frontend", "object", "action"], buckets=SLOW_BUCKETS, registry=r)
        self.lifecycle_errors = Counter(
            "narwhal_lifecycle_errors", "Lifecycle actions that failed, by front end and error kind",
            ["frontend", "object", "action", "kind"], registry=r)
        self.oom_kills = Counter(
            "narwhal_container_oom_kills", "Containers whose exit was caused by the OOM killer", ["frontend"],
            registry=r)
        self.execs = Counter(
            "narwhal_container_execs", "Processes exec'd in running containers (CRI Exec/ExecSync, docker exec)",
            registry=r)

        # images
        self.pulls = Counter(
            "narwhal_image_pulls", "Image pulls by result (success or the error kind)", ["result"], registry=r)
        self.pull_latency = Histogram(
            "narwhal_image_pull_duration_seconds", "Image pull duration (resolve to the last layer unpacked)",
            buckets=SLOW_BUCKETS, registry=r)
        self.pull_bytes = Counter(
            "narwhal_image_pull_bytes", "Bytes of blobs (layers and configs) downloaded from registries",
            registry=r)
        self.content_bytes = Counter(
            "narwhal_content_written_bytes", "Bytes of blobs written into containerd's content store, by way: "
            "Content.Write messages or narwhald writing the ingest's file (ingest-direct)", ["via"], registry=r)
        self.pulls_in_progress = Gauge(
            "narwhal_image_pulls_in_progress", "Image pulls running now", registry=r)

        # docker build (pkg.docker.build)
        self.builds = Counter(
            "narwhal_build_builds", "docker builds by result (success or the error kind)", ["result"], registry=r)
        self.build_latency = Histogram(
            "narwhal_build_duration_seconds", "docker build duration (context received to image named)",
            buckets=SLOW_BUCKETS, registry=r)
        self.build_steps = Counter(
            "narwhal_build_steps", "Build steps (Dockerfile instructions after FROM) by how they ended: executed or "
            "cached", ["result"], registry=r)

        # CNI
        self.cni_latency = Histogram(
            "narwhal_cni_operation_duration_seconds", "CNI plugin calls by command (ADD, DEL, CHECK, ...)",
            ["command", "plugin"], buckets=REQUEST_BUCKETS, registry=r)
        self.cni_errors = Counter(
            "narwhal_cni_operation_errors", "CNI plugin calls that failed", ["command", "plugin"], registry=r)

        # container logs: narwhal-logger reports its totals in a stats file (see watch_logs)

        # events (published and subscribers: see watch_bus)
        self.event_overflows = Counter(
            "narwhal_event_subscriber_overflows",
            "Event subscribers cut off because they fell behind (a full queue)", registry=r)

    # ---- wiring ----
    def watch_states(self, frontend: str, containers: StateSource, sandboxes: StateSource) -> None:
        """Count ``frontend``'s containers and sandboxes by state at each scrape."""
        self.live.containers[frontend] = containers
        self.live.sandboxes[frontend] = sandboxes

    def watch_logs(self, frontend: str, stats_files: Callable[[], Iterable[Path]]) -> None:
        """Sum ``frontend``'s narwhal-logger stats files (one per container) into the log metrics."""
        self.live.log_stats[frontend] = stats_files
        self.live.log_retired.setdefault(frontend, [0, 0])

    def retire_logs(self, frontend: str, stats_file: Path) -> None:
        """A container is being removed: keep its log totals in the counters, and drop its stats file so it
        is never counted twice (call before its directory goes)."""
        with self.live.lock:
            found = read_stats_file(str(stats_file))
            if found is not None:
                retired = self.live.log_retired.setdefault(frontend, [0, 0])
                retired[0] += found[0]
                retired[1] += found[1]
            stats_file.unlink(missing_ok=True)

    def watch_bus(self, published: Callable[[], int], subscribers: Callable[[], int]) -> None:
        self.live.bus_published = published
        self.live.bus_subscribers = subscribers

    def render(self) -> bytes:
        return generate_text(self.registry)

    async def render_async(self) -> bytes:
        """The exposition, rendered in a worker thread (files, /proc) from a snapshot of the stores taken
        here on the event loop; one scrape at a time."""
        async with self._render_lock:
            self.live.pinned = self.live.snapshot()
            try:
                return await asyncio.to_thread(self.render)
            finally:
                self.live.pinned = None

    # ---- helpers for call sites ----
    @contextmanager
    def cni_call(self, command: str, plugin: str) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        except BaseException:
            self.cni_errors.labels(command=command, plugin=plugin).inc()
            raise
        finally:
            self.cni_latency.labels(command=command, plugin=plugin).observe(time.monotonic() - start)

    @contextmanager
    def pull(self) -> Iterator[None]:
        self.pulls_in_progress.inc()
        start = time.monotonic()
        try:
            yield
        except BaseException as exc:
            self.pulls.labels(result=error_kind(exc)).inc()
            raise
        else:
            self.pulls.labels(result="success").inc()
            self.pull_latency.observe(time.monotonic() - start)
        finally:
            self.pulls_in_progress.dec()


_current: Metrics | None = None


def install(metrics: Metrics) -> None:
    """Make ``metrics`` the one the core's call sites report to (the daemon does this once)."""
    global _current
    _current = metrics


def current() -> Metrics:
    global _current
    if _current is None:
        _current = Metrics()
    return _current


# ---- decorators for the core's lifecycle methods ----
class _HasDomain(Protocol):
    @property
    def domain(self) -> str: ...


class _Service(Protocol):
    @property
    def ctx(self) -> _HasDomain: ...


S = TypeVar("S", bound=_Service)
P = ParamSpec("P")
T = TypeVar("T")


_Method = Callable[Concatenate[S, P], Coroutine[Any, Any, T]]


def lifecycle(obj: str, action: str) -> Callable[[_Method[S, P, T]], _Method[S, P, T]]:
    """Time a ContainerService/SandboxService method as ``narwhal_lifecycle_duration_seconds``,
    labelled with the front end of the service's runtime domain; failures count by error kind."""

    def decorate(fn: _Method[S, P, T]) -> _Method[S, P, T]:
        @functools.wraps(fn)
        async def timed(service: S, /, *args: P.args, **kwargs: P.kwargs) -> T:
            m = current()
            frontend = frontend_of(service.ctx.domain)
            start = time.monotonic()
            try:
                return await fn(service, *args, **kwargs)
            except BaseException as exc:
                m.lifecycle_errors.labels(frontend=frontend, object=obj, action=action, kind=error_kind(exc)).inc()
                raise
            finally:
                m.lifecycle_latency.labels(frontend=frontend, object=obj, action=action).observe(
                    time.monotonic() - start)

        return timed

    return decorate

