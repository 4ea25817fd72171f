"""docs/grafana/narwhal.json: valid JSON, well-formed panels, PromQL that parses, and only metrics that exist."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from pkg.metrics import Metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana" / "narwhal.json"
_METRIC = re.compile(r"\b((?:narwhal|process|python)_[a-z0-9_]+)\b")
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",), "info": ("",)}


def _panels() -> list[dict[str, Any]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def _exprs() -> list[str]:
    return [t["expr"] for p in _panels() for t in p["targets"]]


def _exported_series() -> set[str]:
    m = Metrics()
    m.watch_states("cri", list, list)
    m.watch_bus(lambda: 0, lambda: 0)
    names = set()
    for family in m.registry.collect():
        for suffix in _SUFFIXES.get(family.type, ("",)):
            names.add(family.name + suffix)
    return names


def test_dashboard_is_valid_json_with_well_formed_panels() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] == "Narwhal"
    assert {v["name"] for v in dashboard["templating"]["list"]} == {"datasource", "instance"}
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in _panels():
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24 and pos["h"] > 0, panel["title"]
        assert panel["targets"] and all(t["expr"] and t["refId"] for t in panel["targets"]), panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}"


def test_every_query_names_metrics_that_narwhald_exports() -> None:
    exported = _exported_series()
    used = {name for expr in _exprs() for name in _METRIC.findall(expr)}
    assert used, "no metric names found in the dashboard"
    assert sorted(used - exported) == []
    # And the dashboard covers each family of Narwhal metrics at least once.
    families = {n.removesuffix(s) for n in used for s in ("_bucket", "_count", "_sum", "_total") if n.endswith(s)}
    assert {"narwhal_cri_requests", "narwhal_docker_request_duration_seconds", "narwhal_image_pull_bytes",
            "narwhal_cni_operation_duration_seconds", "narwhal_lifecycle_duration_seconds"} <= families | used


def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is missing: run `make setup` (Debian package prometheus)"
    rules = [{"record": f"dashboard:query_{i}", "expr": expr.replace("$__rate_interval", "5m")
              .replace("$instance", ".*")} for i, expr in enumerate(_exprs())]
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
