"""A hypothesis fuzzer over every route of narwhald's Docker API (issue 15), on the unix socket.

Each route gets path parameters (a real container/image/volume/network name, or hostile strings), query
parameters drawn from the names Docker's API uses with hostile values (regexps that backtrack, numbers past
64 bits, non-ASCII digits, newlines), and bodies (JSON built from Docker's field names with hostile values,
raw non-JSON, NaN/1e400 literals, random bytes).  It walks narwhald's own route table; schemathesis over
moby's swagger.yaml: test_security_schemathesis.py.

Pass criteria: no 500 (an unexpected exception or an Internal error), no hang past the client timeout,
narwhald alive.  501 (not implemented here), 503 and 504 (a registry or runtime unavailable, as moby also
answers with 5xx) are counted but allowed.
"""
from __future__ import annotations

import http.client
import json
import socket
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# Endpoints that hijack the connection or stream until the object ends: fuzzed for their status only with
# a short read (see _send), never left open.
STREAMING = {"/events", "/containers/{id}/attach", "/containers/{id}/wait", "/exec/{id}/start",
             "/containers/{id}/stats", "/containers/{id}/logs", "/images/get", "/images/{name:.+}/get",
             "/containers/{id}/export", "/containers/{id}/archive"}
ALLOWED_5XX = {501, 503, 504}
_HOSTILE = ["", "a\n", "web\n", "\x00", "..", "../../etc/passwd", "x" * 3000, "٣", "８０", "1e400", "NaN",
            "-1", "99999999999999999999999", "(a+)+$", "{", "[]", "true", "%00", "€", "sha256:" + "0" * 64]
_QUERY_KEYS = ["all", "filters", "limit", "size", "force", "v", "t", "signal", "name", "tag", "since", "until",
               "tail", "timestamps", "stdout", "stderr", "path", "noOverwriteDirNonDir", "copyUIDGID", "ps_args",
               "platform", "changes", "repo", "comment", "author", "pause", "dangling", "link", "detachKeys", "h",
               "w", "condition", "digests", "shared-size", "quiet", "message", "names", "dangling", "term"]
_FILTERS = ['{"name":["(a+)+$"]}', '{"name":{"^/fz":true}}', '{"label":["a=b\\n"]}', '{"until":["1e400"]}',
            '{"status":["nosuch"]}', '{"publish":["٣/tcp"]}', '{"id":[""]}', '{"before":["x"]}', '{', '[]',
            '{"dangling":["maybe"]}', '{"reference":["*"]}', '{"driver":["local"]}', '{"unknown":["x"]}']
# Pulls, pushes and searches must never leave loopback: their image names come from this list only.
_NETWORK_SAFE = {"fromImage", "term", "repo"}
_SAFE_NAMES = ["busybox", "nosuch-image", "127.0.0.1:1/x", "127.0.0.1:1/x:t", "busybox:nosuch", "bad name",
               "UPPER", "a" * 300]
_FIELDS = ["Image", "Cmd", "Entrypoint", "Env", "Labels", "HostConfig", "Memory", "MemorySwap", "NanoCpus",
           "CpuShares", "CpuQuota", "CpuPeriod", "PortBindings", "ExposedPorts", "Binds", "Mounts", "ExtraHosts",
           "RestartPolicy", "Name", "MaximumRetryCount", "Healthcheck", "Interval", "Timeout", "Retries",
           "StopTimeout", "User", "WorkingDir", "Tty", "OpenStdin", "NetworkMode", "Privileged", "CapAdd",
           "SecurityOpt", "Ulimits", "LogConfig", "Type", "Config", "Driver", "DriverOpts", "IPAM", "Subnet",
           "Options", "Container", "EndpointConfig", "Aliases", "AttachStdout", "Detach", "username", "password",
           "serveraddress", "Devices", "Sysctls", "ShmSize", "Dns", "Volumes", "StopSignal", "Test"]
_SCALAR = st.one_of(
    st.sampled_from(_HOSTILE), st.text(max_size=20), st.booleans(), st.none(),
    st.sampled_from([0, -1, 1 << 63, -(1 << 63) - 1, 1 << 64, 1.5, 6 << 20, 2**31]), st.integers(),
    st.sampled_from(["busybox", "8080/tcp", "/tmp:/x", "web:1.2.3.4", "web\n1.2.3.4 evil:1.2.3.4", "on-failure"]))
_JSON = st.recursive(
    _SCALAR,
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.one_of(st.sampled_from(_FIELDS), st.text(max_size=8)), inner,
                                            max_size=5)),
    max_leaves=12)
_RAW_BODIES = [b"", b"null", b"not json", b'{"Memory": 1e400}', b'{"Memory": NaN}', b"[]",
               b'{"Image": "busybox", "HostConfig": {"Memory": Infinity}}', b"\xff\xfe", b"{" * 5000]


@dataclass
class Tally:
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    allowed_5xx: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    seconds: Counter[str] = field(default_factory=Counter)  # time spent per route


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = str(path)

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


def _query(route: str) -> st.SearchStrategy[dict[str, str]]:
    def value(key: str) -> st.SearchStrategy[str]:
        if key in _NETWORK_SAFE or (key in ("name", "tag") and route.startswith("/images/create")):
            return st.sampled_from(_SAFE_NAMES)
        if key == "filters":
            return st.sampled_from(_FILTERS)
        if key in ("follow", "stream"):
            return st.just("0")
        return st.one_of(st.sampled_from(_HOSTILE), st.sampled_from(["0", "1", "true", "busybox", "/etc"]),
                         st.text(max_size=12))
    keys = st.lists(st.sampled_from(_QUERY_KEYS + (["fromImage"] if route == "/images/create" else [])),
                    max_size=4, unique=True)
    return keys.flatmap(lambda ks: st.fixed_dictionaries({k: value(k) for k in ks}))


def _path(route: str, targets: dict[str, list[str]]) -> st.SearchStrategy[str]:
    def fill(ids: list[str]) -> str:
        out = route
        for placeholder, value in zip(("{id}", "{name:.+}", "{name}"), ids, strict=False):
            out = out.replace(placeholder, urllib.parse.quote(value, safe=""))
        return out.replace("{id}", "x").replace("{name:.+}", "x").replace("{name}", "x")
    kind = "images" if route.startswith(("/images", "/distribution")) else "volumes" if route.startswith(
        "/volumes") else "networks" if route.startswith("/networks") else "exec" if route.startswith(
        "/exec") else "containers"
    pick = st.one_of(st.sampled_from(targets.get(kind) or ["x"]), st.sampled_from(_HOSTILE[:8]),
                     st.text(min_size=1, max_size=12))
    if kind == "images" and route != "/images/{name:.+}/json":
        pick = st.sampled_from((targets.get(kind) or []) + _SAFE_NAMES)
    return st.lists(pick, min_size=1, max_size=1).map(fill)


def _body() -> st.SearchStrategy[bytes]:
    return st.one_of(st.sampled_from(_RAW_BODIES), _JSON.map(lambda v: json.dumps(v).encode()),
                     st.binary(max_size=64))


def _send(socket_path: Path, method: str, path: str, body: bytes | None, streaming: bool,
          timeout: float) -> tuple[int, bytes]:
    conn = _UnixConnection(socket_path, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if body else {}
        conn.request(method, path, body=body, headers=headers)
        with conn.getresponse() as resp:
            data = resp.read(4096) if streaming or resp.status >= 300 else resp.read()
            return resp.status, data
    finally:
        conn.close()


def fuzz_route(socket_path: Path, method: str, route: str, targets: dict[str, list[str]], tally: Tally, *,
               examples: int, timeout: float = 60.0) -> None:
    streaming = route in STREAMING or (method == "POST" and route == "/exec/{id}/start")

    @settings(max_examples=examples, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(_path(route, targets), _query(route), _body() if method in ("POST", "PUT") else st.none())
    def one(path: str, query: dict[str, str], body: bytes | None) -> None:
        tally.requests += 1
        url = path + ("?" + urllib.parse.urlencode(query) if query else "")
        start = time.monotonic()
        try:
            status, data = _send(socket_path, method, url, body, streaming, 2.0 if streaming else timeout)
        except TimeoutError:
            if streaming:
                return  # a stream that is still streaming: that is its job
            tally.failures.append(f"{method} {url}: no answer in {timeout:.0f}s")
            return
        except (ConnectionError, http.client.HTTPException) as exc:
            if streaming:
                return
            tally.failures.append(f"{method} {url}: {type(exc).__name__}: {exc} ({time.monotonic() - start:.1f}s)")
            return
        tally.statuses[status] += 1
        if status >= 500:
            text = data[:300].decode(errors="replace")
            if status in ALLOWED_5XX:
                tally.allowed_5xx[f"{status} {method} {route}"] += 1
            else:
                tally.failures.append(f"{status} {method} {url} body={body!r:.200}: {text}")

    start = time.monotonic()
    try:
        one()
    finally:
        tally.seconds[f"{method} {route}"] += time.monotonic() - start


def docker_routes() -> list[tuple[str, str]]:
    """(method, route) of every route narwhald serves."""
    from dockerapi.routes import all_routes

    return [(method, path) for method, path, _ in all_routes()]


def json_of(data: bytes) -> Any:
    return json.loads(data)
