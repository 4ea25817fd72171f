"""`hack/bench --smoke`: the benchmark harness runs end to end (narwhald and the containerd CRI anchor, a
couple of iterations each) and writes its JSON and table, so it cannot rot between `make bench` runs."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CRI_CALLS = ("RunPodSandbox", "CreateContainer", "StartContainer", "StopContainer", "StopPodSandbox",
             "RemovePodSandbox", "ExecSync", "PullImage")


def test_bench_smoke(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(REPO / "hack" / "bench"), "--smoke", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=360)
    assert proc.returncode == 0, proc.stderr[-4000:]
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["meta"]["mode"] == "smoke"
    rows = {(r["group"], r["name"]): r for r in data["results"]}
    for call in CRI_CALLS:
        row = rows[("CRI", call)]
        # Both systems measured, no error recorded, every sample a positive duration.
        assert row["errors"] == {}, (call, row["errors"])
        for system in ("narwhal", "containerd"):
            samples = row["samples"][system]
            assert samples and all(v > 0 for v in samples), (call, system, samples)
        assert row["ratio"] > 0
    # The density rows (hack/bench/density.py): memory per pod counted for both, from a shim at least.
    for name in ("memory per pod, 2 pods", "memory per pod, 3 pods", "PullImage, cold, 5 × 20 MiB"):
        row = rows[("CRI", name)]
        assert row["errors"] == {}, (name, row["errors"])
        assert all(row["samples"][s] and row["samples"][s][0] > 0 for s in ("narwhal", "containerd")), name
    profiles = data["memory_profiles"]
    narwhal = profiles["narwhal, 3 pods"]["after"]
    # Defaults (log-service: true): no narwhal-logger per container; the log service counted as a daemon.
    assert narwhal["shims"] >= 1 and narwhal.get("loggers", 0) == 0 and narwhal["log-service"] > 0
    assert profiles["containerd, 3 pods"]["after"]["pauses"] == 3
    logs = next(r for (g, n), r in rows.items() if g == "CRI" and n.startswith("log throughput"))
    assert logs["samples"]["narwhal"][0] > 0 and logs["samples"]["containerd"][0] > 0
    # The Docker rows exist for narwhal: measured, or recorded as an error, never silently missing.
    for (group, name), row in rows.items():
        if group == "Docker":
            assert row["samples"].get("narwhal") or row["errors"].get("narwhal"), name
    table = (tmp_path / "benchmarks.md").read_text()
    assert "| RunPodSandbox | ms |" in table and "### Docker (anchor: dockerd)" in table
    assert not list(tmp_path.glob("*.png"))  # no plots in smoke mode
