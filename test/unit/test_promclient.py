"""pkg.promclient (prometheus_client without its HTTP stack) and the other idle-RSS import cuts (issue 21).

The exposition must stay byte for byte what prometheus_client's own ``generate_latest`` writes, and the
modules narwhald no longer imports at start must stay out: a fresh interpreter checks ``sys.modules``.
"""
from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from prometheus_client import exposition
from prometheus_client.core import GaugeHistogramMetricFamily
from prometheus_client.metrics import Enum, Info, Summary
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from pkg import promclient
from pkg.metrics import Metrics
from pkg.version import narwhal_version

REPO = Path(__file__).resolve().parents[2]

# Modules that came in only with prometheus_client's exposition module, importlib.metadata, the image
# archive code or the idna codec, none of which an idle narwhald uses.
NOT_AT_START = ("prometheus_client.exposition", "http.server", "http.client", "wsgiref", "urllib.request", "email",
                "gzip", "importlib.metadata", "zipfile", "tarfile", "pkg.images.archive", "pkg.images.archive_export",
                "pkg.images.rootfs_import", "pkg.images.snapshot_commit", "encodings.idna", "unicodedata")


def _fresh(code: str) -> object:
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_exposition_of_narwhals_registry_is_prometheus_clients() -> None:
    m = Metrics()
    m.watch_bus(lambda: 7, lambda: 2)
    m.watch_states("cri", lambda: ["running", "exited", "running"], lambda: ["ready"])
    m.cri_requests.labels(method='Odd"Name\\with\nnewline', code="OK").inc()
    m.docker_requests.labels(route="/containers/{id}/json", method="GET", status="200").inc(3)
    m.docker_latency.labels(route="/ünïcode", method="GET", status="404").observe(0.02)
    m.lifecycle_latency.labels(frontend="cri", object="container", action="start").observe(1e-9)
    m.pull_latency.observe(12345678.9)
    m.pulls_in_progress.set(float("nan"))
    m.containerd_up.set(float("-inf"))
    m.pull_bytes.inc(1e21)
    # The process collector reads /proc: render both from the same collected families.
    families = list(m.registry.collect())
    frozen = _Frozen(families)
    assert promclient.generate_text(frozen) == exposition.generate_latest(frozen)
    assert m.render().startswith(b"# HELP")  # what /metrics serves goes through generate_text


class _Frozen(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


def test_exposition_of_every_metric_type_is_prometheus_clients() -> None:
    r = CollectorRegistry()
    Summary("latency", "A summary\nwith \\ in help", ["path"], registry=r).labels(path="/").observe(3)
    Info("build", "An info", registry=r).info({"version": "1", "commit": 'a"b'})
    Enum("phase", "An enum", states=["up", "down"], registry=r).state("down")
    gh = GaugeHistogramMetricFamily("queue", "A gauge histogram", buckets=[("1.0", 4), ("+Inf", 5)], gsum_value=7)
    untyped = Metric("legacy", "An untyped metric", "unknown")
    untyped.add_sample("legacy", {"9bad-label": "v"}, 1.5, timestamp=1700000000.123)
    odd = Metric("name.with-dots", "A name outside the legacy set", "gauge")
    odd.add_sample("name.with-dots", {}, 2)
    r.register(_Frozen([gh, untyped, odd]))
    from prometheus_client.metrics import Counter
    Counter("created_on", "A counter with its _created series", registry=r).inc()
    assert promclient.generate_text(r) == exposition.generate_latest(r)


def test_created_series_render_as_prometheus_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    from prometheus_client import metrics as pm
    monkeypatch.setattr(pm, "_use_created", True)
    r = CollectorRegistry()
    pm.Counter("with_created", "Counter", ["a"], registry=r).labels(a="x").inc()
    pm.Histogram("hist_created", "Histogram", registry=r).observe(0.3)
    text = promclient.generate_text(r)
    assert b"with_created_created" in text
    assert text == exposition.generate_latest(r)


def test_content_type_is_prometheus_clients() -> None:
    assert promclient.CONTENT_TYPE_LATEST == exposition.CONTENT_TYPE_LATEST


def test_narwhal_version_is_importlib_metadatas() -> None:
    try:
        expected = metadata.version("narwhal")
    except metadata.PackageNotFoundError:
        expected = "0.0.0-dev"
    assert narwhal_version() == expected


def test_narwhald_imports_no_exposition_stack_at_start() -> None:
    loaded = _fresh(
        "import json, sys\n"
        "import narwhal.main, narwhal.daemon\n"
        "from pkg.sockets import listen_tcp\n"
        "for s in listen_tcp('127.0.0.1', 0): s.close()\n"
        f"print(json.dumps(sorted(m for m in {NOT_AT_START!r} if m in sys.modules)))\n")
    assert loaded == []


def test_package_init_runs_when_a_name_of_it_is_asked() -> None:
    """Code that imports prometheus_client the usual way after pkg.promclient gets the whole package."""
    answer = _fresh(
        "import json, sys\n"
        "import pkg.metrics\n"
        "before = 'prometheus_client.exposition' in sys.modules\n"
        "import prometheus_client\n"
        "from prometheus_client import Counter, generate_latest, start_http_server\n"
        "from prometheus_client.metrics import Counter as Same\n"
        "m = pkg.metrics.Metrics()\n"
        "print(json.dumps([before, Counter is Same, generate_latest(m.registry).startswith(b'# HELP'),\n"
        "                  hasattr(prometheus_client, 'no_such_name'), hasattr(prometheus_client, '__wrapped__')]))\n")
    assert answer == [False, True, True, False, False]

