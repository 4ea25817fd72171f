"""Where narwhald's time goes: per-call means from its own Prometheus histograms, diffed around a phase.

narwhald times every containerd gRPC call, CNI plugin call and CRI request
(pkg/metrics.py); scraping /metrics before and after the sequential lifecycle
phase gives the mean cost of each step inside RunPodSandbox, StartContainer
and the rest, without a profiler attached.
"""
from __future__ import annotations

import re
import urllib.request
from typing import Any

FAMILIES = {
    "narwhal_cri_request_duration_seconds": "CRI",
    "narwhal_containerd_request_duration_seconds": "containerd",
    "narwhal_cni_operation_duration_seconds": "CNI",
    "narwhal_docker_request_duration_seconds": "Docker API",
    "narwhal_lifecycle_duration_seconds": "lifecycle",
}
_LINE = re.compile(r'^(\w+)_(sum|count)\{(.*)\} (\S+)$')


def scrape(url: str) -> dict[tuple[str, str], tuple[float, float]]:
    """(family label, call) -> (sum seconds, count)."""
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    found: dict[tuple[str, str], list[float]] = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if not m or m.group(1) not in FAMILIES:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(3)))
        call = "/".join(v for k, v in labels.items()
                        if k in ("service", "method", "command", "plugin", "route", "frontend", "object", "action"))
        key = (FAMILIES[m.group(1)], call)
        pair = found.setdefault(key, [0.0, 0.0])
        pair[0 if m.group(2) == "sum" else 1] = float(m.group(4))
    return {k: (v[0], v[1]) for k, v in found.items()}


def diff(before: dict[tuple[str, str], tuple[float, float]], after: dict[tuple[str, str], tuple[float, float]],
         per: int) -> list[dict[str, Any]]:
    """Mean ms per call and calls per lifecycle, for calls made between the two scrapes."""
    rows = []
    for key, (total, count) in after.items():
        total0, count0 = before.get(key, (0.0, 0.0))
        n = count - count0
        if n <= 0:
            continue
        rows.append({"layer": key[0], "call": key[1], "calls_per_lifecycle": n / per,
                     "mean_ms": 1000 * (total - total0) / n})
    rows.sort(key=lambda r: (r["layer"], -r["mean_ms"] * r["calls_per_lifecycle"]))
    return rows


def markdown(rows: list[dict[str, Any]], unit: str = "pod lifecycle") -> str:
    lines = [f"| layer | call | calls per {unit} | mean ms |", "|---|---|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['layer']} | {r['call']} | {r['calls_per_lifecycle']:.1f} | {r['mean_ms']:.1f} |")
    return "\n".join(lines)
