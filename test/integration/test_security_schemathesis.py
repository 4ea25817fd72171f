"""Schemathesis over moby's own API description (issue 15): every operation of swagger.yaml v1.41 (Debian's
golang-github-docker-docker-dev) with schema-aware generated paths, queries and bodies, sent to a private
narwhald through a loopback TCP forward of its Docker socket.  Fixed seed (derandomize), bounded examples;
the long run is `hack/fuzz --schemathesis`.

Where test_security_fuzz.py walks narwhald's own route table with hostile values, this one knows moby's
schema: bodies that are well-formed ContainerConfig/NetworkCreate/SwarmSpec objects with odd values, which
reach deeper than a parse error.

Pass criteria: no 5xx other than those moby answers itself (fuzz_docker.ALLOWED_5XX), no hang, narwhald
alive, `leftovers()` empty.  Operations that would reach off the machine are not sent (see OFF_MACHINE).
"""
from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lib import fuzz_docker
from lib.docker import DockerDaemon, docker_daemon
from lib.dockerpy import TcpForward
from lib.leaks import leftovers
from lib.registry import Registry

SWAGGER = Path("/usr/share/gocode/src/github.com/docker/docker/api/swagger.yaml")
EXAMPLES = int(os.environ.get("NARWHAL_SCHEMATHESIS_EXAMPLES", "20"))
# A registry, index or plugin store named by the request, or a URL narwhald would fetch: not sent, so that the
# fuzz never leaves loopback (a hostname drawn at random could resolve).
OFF_MACHINE = {("POST", "/images/create"), ("POST", "/images/{name}/push"), ("GET", "/images/search"),
               ("POST", "/auth"), ("GET", "/distribution/{name}/json"), ("POST", "/plugins/pull"),
               ("POST", "/plugins/{name}/upgrade"), ("GET", "/plugins/privileges"), ("POST", "/build"),
               ("POST", "/swarm/join")}
# Streams that can follow for ever (stats every second, events, logs -f): schemathesis reads a body to its end,
# and one that sends a little every second never meets a read timeout.  test_security_fuzz.py fuzzes these
# routes with bounded reads; here they are not sent.
FOLLOWING = {("GET", "/containers/{id}/stats"), ("GET", "/events"), ("GET", "/containers/{id}/logs"),
             ("GET", "/services/{id}/logs"), ("GET", "/tasks/{id}/logs")}
# Hijacked or following streams: a read timeout there means the stream is open, which is its job.
STREAMING = ("/attach", "/events", "/logs", "/stats", "/wait", "/exec/{id}/start", "/export", "/get")
TIMEOUT = 20.0
# 500s moby answers itself, by their message: an update whose ?version= is not the object's current version is
# swarmkit's plain error, which moby passes on as "rpc error: code = Unknown desc = update out of sequence" with
# 500 (docker/docker-py#1848, moby/moby#30794).
MOBY_500 = ("update out of sequence",)


@schemathesis.serializer("application/x-tar")
def _tar_body(ctx: Any, value: Any) -> bytes:
    """The swagger's tar bodies (archive upload, image load, build context) are opaque strings: sent as their
    bytes, which is not a tar archive, the case to refuse cleanly."""
    if isinstance(value, bytes):
        return value
    return value.encode() if isinstance(value, str) else json.dumps(value).encode()


@pytest.fixture(scope="module")
def dd(registry: Registry) -> Iterator[DockerDaemon]:
    yield from docker_daemon(registry)


def _report(data: dict[str, object]) -> None:
    path = os.environ.get("NARWHAL_FUZZ_REPORT")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"suite": "schemathesis", **data}) + "\n")
    print("schemathesis", json.dumps(data))


def _fuzz_operation(op: Any, base_url: str, session: requests.Session, statuses: Counter[int],
                    allowed: Counter[str], failures: list[str]) -> int:
    streaming = any(part in op.path for part in STREAMING)
    sent = 0

    @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def one(data: st.DataObject) -> None:
        nonlocal sent
        case = data.draw(op.as_strategy())
        sent += 1
        try:
            response = case.call(base_url=base_url, session=session, timeout=2.0 if streaming else TIMEOUT)
        except requests.exceptions.ReadTimeout:
            if not streaming:
                failures.append(f"{op.method.upper()} {case.formatted_path}: no answer in {TIMEOUT:.0f}s")
            return
        except requests.exceptions.ConnectionError as exc:
            if not streaming:
                failures.append(f"{op.method.upper()} {case.formatted_path}: {type(exc).__name__}: {exc}")
            return
        statuses[response.status_code] += 1
        if response.status_code >= 500:
            label = f"{response.status_code} {op.method.upper()} {op.path}"
            if response.status_code in fuzz_docker.ALLOWED_5XX or (
                    response.status_code == 500 and any(text in response.text for text in MOBY_500)):
                allowed[label] += 1
            else:
                failures.append(f"{label} query={case.query!r:.200} body={case.body!r:.300}: "
                                f"{response.text[:300]}")

    one()
    return sent


def test_schemathesis_every_operation(dd: DockerDaemon) -> None:
    assert SWAGGER.exists(), "apt-get install golang-github-docker-docker-dev (hack/setup.sh)"
    dd.out("run", "-d", "--name", "st-target", "--stop-timeout", "1", "busybox", "sleep", "3600")
    # A manager, so that node/service/task/secret/config operations reach their handlers rather than 503.
    dd.out("swarm", "init", "--advertise-addr", "127.0.0.1")
    schema = schemathesis.openapi.from_path(str(SWAGGER))
    assert schema.raw_schema["info"]["version"] == "1.41"
    forward = TcpForward(str(dd.daemon.docker_socket))
    base_url = f"http://127.0.0.1:{forward.port}{schema.raw_schema['basePath']}"
    statuses: Counter[int] = Counter()
    allowed: Counter[str] = Counter()
    failures: list[str] = []
    seconds: Counter[str] = Counter()
    operations = requests_sent = 0
    only = os.environ.get("NARWHAL_FUZZ_ROUTES", "")  # a substring: fuzz only the operations that contain it
    try:
        with requests.Session() as session:
            ops = [result.ok() for result in schema.get_all_operations()]
            for op in sorted(ops, key=lambda op: op.path == "/swarm/leave"):  # stable: leave the swarm last
                if (op.method.upper(), op.path) in OFF_MACHINE | FOLLOWING or only not in op.path:
                    continue
                start = time.monotonic()
                operations += 1
                requests_sent += _fuzz_operation(op, base_url, session, statuses, allowed, failures)
                seconds[f"{op.method.upper()} {op.path}"] += time.monotonic() - start
                assert dd.daemon.proc is not None and dd.daemon.proc.poll() is None, f"narwhald died: {op.path}"
    finally:
        forward.close()
        print("slowest operations:", seconds.most_common(8))
    assert dd.docker("version").returncode == 0
    _report({"operations": operations, "requests": requests_sent, "statuses": dict(statuses),
             "allowed_5xx": dict(allowed), "failures": len(failures)})
    assert failures == [], "\n".join(failures)
    assert operations >= 90


def test_nothing_left_behind(dd: DockerDaemon) -> None:
    dd.docker("swarm", "leave", "--force", check=False)  # the fuzz may have made this node a swarm manager
    dd.rm_all()
    dd.docker("volume", "prune", "-f", "--all", check=False)
    dd.docker("network", "prune", "-f", check=False)
    assert leftovers(dd.daemon) == {}
