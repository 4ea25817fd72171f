"""prometheus_client's metric types and text format, without its HTTP exposition stack.

``prometheus_client/__init__.py`` imports ``prometheus_client.exposition``, which imports http.server,
wsgiref, urllib.request, gzip and (through http.client) email: ~3.6 MiB of a narwhald's idle RSS
(docs/benchmarks.md, "Idle RSS, and containerd's plugins") for servers and push clients narwhald never uses — /metrics
is served by narwhal/metrics_http.py.  So the package is entered without running its ``__init__``: its
submodules (metric types, registry, collectors) import as usual, and the ``__init__`` runs, whole, the
first time anything asks the package itself for a name it defines (``from prometheus_client import
Counter`` in other code, a test's ``prometheus_client.generate_latest``) — nothing outside narwhald's
own use sees a difference.  ``generate_text`` renders what ``prometheus_client.generate_latest`` renders
(test/unit/test_promclient.py compares the two byte for byte).

Import prometheus_client's names through this module (pkg.metrics does), so the package is entered
here before anything imports it.
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from collections.abc import Iterator
from typing import Any


def _enter_without_init() -> None:
    """Put a ``prometheus_client`` package in sys.modules whose ``__init__`` runs at the first name asked of
    it (a no-op when the package is already imported)."""
    if "prometheus_client" in sys.modules:
        return
    spec = importlib.util.find_spec("prometheus_client")
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        return  # not installed as a regular package: the imports below fail or load it as usual
    package = importlib.util.module_from_spec(spec)
    loader = spec.loader

    def complete(name: str) -> Any:
        # PEP 562: called only for names the module does not have yet.  Run the real __init__ once, in the
        # package's own namespace (its submodules already imported are reused), then answer.  Not for a
        # submodule's name (``from . import values`` asks before importing it), nor for dunder probes of
        # tools scanning sys.modules (the __init__ defines no dunder but __all__).
        if (name.startswith("__") and name != "__all__") or \
                importlib.machinery.PathFinder.find_spec(f"prometheus_client.{name}", package.__path__):
            raise AttributeError(name)
        del package.__getattr__
        loader.exec_module(package)
        try:
            return package.__dict__[name]
        except KeyError:
            raise AttributeError(f"module 'prometheus_client' has no attribute {name!r}") from None

    package.__getattr__ = complete  # type: ignore[method-assign]
    sys.modules["prometheus_client"] = package


_enter_without_init()

from prometheus_client.gc_collector import GCCollector  # noqa: E402
from prometheus_client.metrics import Counter, Gauge, Histogram, disable_created_metrics  # noqa: E402
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric  # noqa: E402
from prometheus_client.platform_collector import PlatformCollector  # noqa: E402
from prometheus_client.process_collector import ProcessCollector  # noqa: E402
from prometheus_client.registry import Collector, CollectorRegistry  # noqa: E402
from prometheus_client.samples import Sample  # noqa: E402
from prometheus_client.utils import floatToGoString  # noqa: E402

__all__ = [
    "CONTENT_TYPE_LATEST", "Collector", "CollectorRegistry", "Counter", "CounterMetricFamily", "GCCollector", "Gauge",
    "GaugeMetricFamily", "Histogram", "Metric", "PlatformCollector", "ProcessCollector", "disable_created_metrics",
    "generate_text",
]

# prometheus_client.exposition.CONTENT_TYPE_LATEST of the pinned version (the unit test checks they agree).
CONTENT_TYPE_LATEST = "text/plain; version=1.0.0; charset=utf-8"

# OpenMetrics types and how the Prometheus text format names them: (suffix of the family name, its TYPE).
_TEXT_FAMILY = {
    "counter": ("_total", "counter"),
    "info": ("_info", "gauge"),
    "stateset": ("", "gauge"),
    "gaugehistogram": ("", "histogram"),
    "unknown": ("", "untyped"),
}
# OpenMetrics-only samples: each goes after its family, as a gauge family of its own.
_SEPARATE_SUFFIXES = ("_created", "_gsum", "_gcount")


def _legacy_name(name: str, colon: bool) -> str:
    """A metric (``colon``) or label name in the legacy character set: every other character becomes "_"
    (prometheus_client's default "underscores" escaping; a valid name is unchanged)."""
    return "".join(
        c if c.isascii() and (c.isalpha() or c == "_" or (colon and c == ":") or (i > 0 and c.isdigit())) else "_"
        for i, c in enumerate(name))


def _help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


def _sample_line(sample: Sample) -> str:
    labels = ",".join(
        '{}="{}"'.format(_legacy_name(k, False), v.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\""))
        for k, v in sorted(sample.labels.items()))
    stamp = "" if sample.timestamp is None else f" {int(float(sample.timestamp) * 1000):d}"
    name = _legacy_name(sample.name, True)
    return f"{name}{{{labels}}} {floatToGoString(sample.value)}{stamp}\n" if labels else \
        f"{name} {floatToGoString(sample.value)}{stamp}\n"


def _family_lines(metric: Metric) -> Iterator[str]:
    suffix, kind = _TEXT_FAMILY.get(metric.type, ("", metric.type))
    name = _legacy_name(metric.name + suffix, True)
    yield f"# HELP {name} {_help(metric.documentation)}\n"
    yield f"# TYPE {name} {kind}\n"
    separate: dict[str, list[str]] = {}
    for sample in metric.samples:
        extra = next((s for s in _SEPARATE_SUFFIXES if sample.name == metric.name + s), None)
        if extra is None:
            yield _sample_line(sample)
        else:
            separate.setdefault(extra, []).append(_sample_line(sample))
    for extra, lines in sorted(separate.items()):
        name = _legacy_name(metric.name + extra, True)
        yield f"# HELP {name} {_help(metric.documentation)}\n"
        yield f"# TYPE {name} gauge\n"
        yield from lines


def generate_text(registry: Collector) -> bytes:
    """The Prometheus text format of everything ``registry`` collects (generate_latest's output)."""
    return "".join(line for metric in registry.collect() for line in _family_lines(metric)).encode()
