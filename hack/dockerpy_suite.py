#!/usr/bin/env python3
"""Run docker-py's upstream integration suite against a private narwhald and summarise it per test.

docker-py's ``tests/integration`` is not shipped in its sdist, so it is not part of this repository:
pass a copy of the docker/docker-py repository (its ``tests/`` and, when present, its ``docker/``
package, which pytest then imports from the copy: the library at the suite's own commit).  This
script starts a local registry seeded with hack/mkimage.py's busybox under the Docker Hub names the
suite pulls (``alpine:3.10``, ``alpine``, ``busybox``, ``hello-world``, ...), a narwhald whose docker.io
mirror is that registry, runs pytest on the suite with ``DOCKER_HOST`` pointing at it, and writes a
JSON summary: every test's outcome with the first line of its failure, the tally, per-module tallies,
and each deselected test with the reason.

    .venv/bin/python hack/dockerpy_suite.py /tmp/docker-py --output /tmp/dockerpy.json \\
        --python /tmp/dockerpy-venv/bin/python

``--python`` is an interpreter with docker, pytest, pytest-timeout, websocket-client (and whatever the
copy imports: six, paramiko); the default is this one.  ``DOCKER_HOST`` is ``tcp://127.0.0.1:<port>``,
forwarded to the daemon's unix socket, as upstream's CI runs it (docker-py builds its websocket attach
URL from an http one only); ``--unix`` uses the socket directly.  The suite's temporary dirs (``TMPDIR``)
are on a bind mount of their own made shared, as / is on a systemd host (the rshared bind test needs a
shared mount under its source, exactly as with dockerd).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "hack"))
sys.path.insert(0, str(REPO / "test"))

from lib import dockerpy  # noqa: E402
from lib.registry import start_registry  # noqa: E402

# Whole files of features Narwhal does not serve (yet): (path regex, reason).
IGNORED_FILES = [
    (r"api_plugin_test\.py$", "plugins are not served"),
    (r"context_api_test\.py$", "docker contexts are client-side (need TLS fixtures of upstream's CI)"),
    (r"credentials/", "credential helpers are client-side (need docker-credential-pass)"),
    (r"git_repo_test\.py$", "builds from a git URL (internet)"),
]

# Single tests: (node id regex, reason).
DESELECTED = [
    (r"ConnectionTimeoutTest", "connects to 192.168.10.2 (test traffic must stay on loopback)"),
    (r"test_run_with_image_that_does_not_exist",
     "pulls an unknown docker.io name: the daemon falls back from the mirror to Docker Hub (no internet)"),
    (r"test_pull_with_sha", "pulls one digest of Docker Hub's hello-world (not in the offline mirror)"),
]


def collect(python: str, suite: Path, env: dict[str, str], ignores: list[str]) -> list[str]:
    out = subprocess.run(
        [python, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *ignores, "tests/integration"],
        cwd=suite, env=env, capture_output=True, text=True, timeout=300,
    )
    ids = [line.strip() for line in out.stdout.splitlines() if "::" in line]
    if not ids:
        raise SystemExit(f"nothing collected:\n{out.stdout}\n{out.stderr}")
    return ids


@contextlib.contextmanager
def shared_tmpdir() -> Iterator[Path]:
    """A temporary dir bind-mounted onto itself and made shared (mount propagation), removed after."""
    path = Path(tempfile.mkdtemp(prefix="narwhal-dockerpy-"))
    try:
        subprocess.run(["mount", "--bind", str(path), str(path)], check=True)
        try:
            subprocess.run(["mount", "--make-shared", str(path)], check=True)
            yield path
        finally:
            subprocess.run(["umount", "-l", str(path)], check=False)
    finally:
        shutil.rmtree(path, ignore_errors=True)


def first_line(text: str | None) -> str:
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip()[:300]
    return ""


def parse_junit(path: Path) -> dict[str, dict[str, str]]:
    """Per test: outcome (passed/failed/error/skipped/xfailed/xpassed) and the first line of its message."""
    results: dict[str, dict[str, str]] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        classname = case.get("classname", "")
        # junit classname is dotted: tests.integration.api_container_test.ListContainersTest
        parts = classname.split(".")
        module_parts = [p for p in parts if not p[:1].isupper()]
        classes = [p for p in parts if p[:1].isupper()]
        node = "/".join(module_parts) + ".py::" + "::".join([*classes, case.get("name", "")])
        outcome, message = "passed", ""
        for child in case:
            if child.tag == "failure":
                outcome, message = "failed", child.get("message") or child.text or ""
            elif child.tag == "error":
                outcome, message = "error", child.get("message") or child.text or ""
            elif child.tag == "skipped":
                kind = child.get("type", "")
                outcome = "xfailed" if kind == "pytest.xfail" else "skipped"
                message = child.get("message") or ""
        results[node] = {"outcome": outcome, "message": first_line(message)}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("suite", type=Path, help="directory holding docker-py's tests/ (a copy, outside the repo)")
    parser.add_argument("--output", type=Path, default=Path("dockerpy-summary.json"))
    parser.add_argument("--python", default=sys.executable, help="interpreter with docker, pytest, pytest-timeout")
    parser.add_argument("--timeout", type=int, default=90, help="seconds per test before pytest-timeout fails it")
    parser.add_argument("-k", dest="keyword", default="", help="only tests matching this pytest -k expression")
    parser.add_argument("--unix", action="store_true", help="DOCKER_HOST is the unix socket (default: tcp forward)")
    args = parser.parse_args()
    suite = args.suite.resolve()
    if not (suite / "tests" / "integration").is_dir():
        raise SystemExit(f"{suite}/tests/integration: not a docker-py test tree")

    ignores: list[str] = []
    ignored_files: dict[str, str] = {}
    for path in sorted((suite / "tests" / "integration").rglob("*_test.py")):
        rel = str(path.relative_to(suite))
        for pattern, reason in IGNORED_FILES:
            if re.search(pattern, rel):
                ignores.append(f"--ignore={rel}")
                ignored_files[rel] = reason
                break

    registry = start_registry()
    daemon = None
    forward: dockerpy.TcpForward | None = None
    shutdown = ""
    started = time.monotonic()
    try:
        dockerpy.seed_registry(registry.host)
        daemon = dockerpy.start_docker_daemon(registry.host)
        env = {**os.environ, "DOCKER_HOST": f"unix://{daemon.docker_socket}", "PYTHONDONTWRITEBYTECODE": "1"}
        if not args.unix:
            forward = dockerpy.TcpForward(str(daemon.docker_socket))
            suite_env = {**env, "DOCKER_HOST": f"tcp://127.0.0.1:{forward.port}"}
        else:
            suite_env = env
        # The suite's session fixture pulls only its TEST_IMG; older test files also expect BUSYBOX to be there.
        for name in dockerpy.HUB_NAMES:
            subprocess.run(["docker", "pull", "-q", name.removeprefix("library/")], env=env, check=True,
                           capture_output=True, timeout=120)
        suite_env.pop("DOCKER_TEST_API_VERSION", None)
        node_ids = collect(args.python, suite, suite_env, ignores)
        deselected: dict[str, str] = {}
        for node in node_ids:
            for pattern, reason in DESELECTED:
                if re.search(pattern, node):
                    deselected[node] = reason
                    break
        junit = args.output.with_suffix(".junit.xml")
        cmd = [args.python, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rN", f"--timeout={args.timeout}",
               "--continue-on-collection-errors",
               f"--junitxml={junit}", "-o", "junit_family=xunit1", *ignores,
               *(f"--deselect={node}" for node in deselected)]
        if args.keyword:
            cmd += ["-k", args.keyword]
        with shared_tmpdir() as tmp:
            subprocess.run([*cmd, "tests/integration"], cwd=suite, env={**suite_env, "TMPDIR": str(tmp)}, check=False)
        results = parse_junit(junit)
    finally:
        try:
            if daemon is not None:
                shutdown = dockerpy.stop(daemon)
                args.output.with_suffix(".narwhald.log").write_text(daemon.log())
                dockerpy.destroy(daemon)
        finally:
            registry.stop()
            if forward is not None:
                forward.close()

    tally = Counter(r["outcome"] for r in results.values())
    modules: dict[str, Counter[str]] = {}
    for node, result in results.items():
        modules.setdefault(node.split("::", 1)[0], Counter())[result["outcome"]] += 1
    summary = {
        "elapsed_seconds": round(time.monotonic() - started),
        "shutdown": shutdown or "clean",
        "tally": {**dict(sorted(tally.items())), "deselected": len(deselected),
                  "ignored_files": len(ignored_files)},
        "modules": {m: dict(sorted(c.items())) for m, c in sorted(modules.items())},
        "tests": dict(sorted(results.items())),
        "deselected": dict(sorted(deselected.items())),
        "ignored_files": ignored_files,
    }
    args.output.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary["tally"]))
    print(f"summary: {args.output}")


if __name__ == "__main__":
    main()
