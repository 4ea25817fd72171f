"""One node, two faces (issue 20): kubelet's containers through the real docker CLI (docker-shows-pods).

A pod with two containers is made through CRI, as kubelet makes it; the docker CLI then sees them with
dockershim's names and labels, reads their logs (followed too), execs into them, inspects them, samples
their stats, and is refused any change to them.  With the switch off (the default) none of it is visible.
"""
from __future__ import annotations

import contextlib
import http.client
import json
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cri_api.v1 import api_pb2
from lib import cri
from lib.daemon import DaemonProcess, start_daemon
from lib.leaks import leftovers
from lib.registry import Registry
from prometheus_client.parser import text_string_to_metric_families

DOCKER = "/usr/local/bin/docker"
WEB = ["sh", "-c", "echo hello from web; echo oops >&2; i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done"]
SIDECAR = ["sleep", "3600"]


@dataclass
class Pod:
    daemon: DaemonProcess
    id: str
    config: api_pb2.PodSandboxConfig
    containers: dict[str, str]  # CRI name -> CRI container ID

    def shim_name(self, container: str) -> str:
        meta = self.config.metadata
        return f"k8s_{container}_{meta.name}_{meta.namespace}_{meta.uid}_0"


def docker(d: DaemonProcess, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DOCKER, *args], env=d.docker_env(), capture_output=True, text=True, timeout=timeout)


def ok(d: DaemonProcess, *args: str) -> str:
    p = docker(d, *args)
    assert p.returncode == 0, f"docker {' '.join(args)} -> {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p.stdout


def run_pod(d: DaemonProcess, registry: Registry, tmp: Path) -> Pod:
    ref = cri.push_busybox(registry)
    cri.pull(d.images(), ref)
    rs = d.runtime()
    config = cri.sandbox_config(log_dir=tmp / "logs", host_network=True)
    pod_id = rs.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=config), timeout=60).pod_sandbox_id
    ids = {}
    for name, command in (("web", WEB), ("sidecar", SIDECAR)):
        cid = rs.CreateContainer(api_pb2.CreateContainerRequest(
            pod_sandbox_id=pod_id, config=cri.container_config(ref, command, name=name, log_path=f"{name}/0.log"),
            sandbox_config=config), timeout=60).container_id
        rs.StartContainer(api_pb2.StartContainerRequest(container_id=cid), timeout=60)
        ids[name] = cid
    return Pod(d, pod_id, config, ids)


def remove_pod(pod: Pod) -> None:
    rs = pod.daemon.runtime()
    rs.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod.id), timeout=60)
    rs.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod.id), timeout=60)


@pytest.fixture(scope="module")
def shown(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pod]:
    d = start_daemon("docker-shows-pods: true\n")
    try:
        pod = run_pod(d, registry, tmp_path_factory.mktemp("pods"))
        yield pod
        remove_pod(pod)
        assert leftovers(d) == {}
    finally:
        d.destroy()


def test_pods_containers_listed_with_dockershim_names(shown: Pod) -> None:
    d = shown.daemon
    web, sidecar = shown.shim_name("web"), shown.shim_name("sidecar")
    assert {web, sidecar} <= set(ok(d, "ps", "--format", "{{.Names}}").split())
    assert ok(d, "ps", "--filter", "label=io.kubernetes.container.name=web", "--format", "{{.Names}}").split() \
        == [web]
    meta = shown.config.metadata
    by_pod = ok(d, "ps", "-a", "--filter", f"label=io.kubernetes.pod.uid={meta.uid}", "--format", "{{.Names}}")
    assert sorted(by_pod.split()) == sorted([web, sidecar])
    by_name = ok(d, "ps", "--filter", "name=k8s_sidecar_", "--format", "{{.ID}}").split()
    assert by_name == [shown.containers["sidecar"][:12]]
    assert ok(d, "ps", "-a", "--filter", "status=exited", "--format", "{{.Names}}").split() == []
    rows = [json.loads(line) for line in ok(d, "ps", "--format", "{{json .}}").splitlines()]
    labels = {r["Names"]: r["Labels"] for r in rows}
    for label in (f"io.kubernetes.pod.name={meta.name}", f"io.kubernetes.pod.namespace={meta.namespace}",
                  f"io.kubernetes.pod.uid={meta.uid}", "io.kubernetes.container.name=web"):
        assert label in labels[web]


def test_inspect(shown: Pod) -> None:
    d = shown.daemon
    [body] = json.loads(ok(d, "inspect", shown.shim_name("web")))
    assert body["Id"] == shown.containers["web"]
    assert body["Name"] == "/" + shown.shim_name("web")
    assert body["State"]["Running"] is True and body["State"]["Pid"] > 0
    assert body["Config"]["Labels"]["io.kubernetes.pod.uid"] == shown.config.metadata.uid
    assert body["Config"]["Entrypoint"] == WEB
    assert body["LogPath"].endswith("web/0.log")
    [by_id] = json.loads(ok(d, "inspect", shown.containers["sidecar"][:12]))
    assert by_id["Name"] == "/" + shown.shim_name("sidecar")


def test_logs_and_follow(shown: Pod) -> None:
    d = shown.daemon
    name = shown.shim_name("web")
    cri.wait_for(lambda: "tick 1" in docker(d, "logs", name).stdout, what="web's ticks in docker logs")
    p = docker(d, "logs", name)
    assert p.stdout.startswith("hello from web\n") and p.stderr == "oops\n"
    last = max(int(line.split()[1]) for line in p.stdout.splitlines() if line.startswith("tick "))
    with subprocess.Popen([DOCKER, "logs", "-f", "--tail", "0", name], env=d.docker_env(),
                          stdout=subprocess.PIPE, text=True) as follow:
        deadline = threading.Timer(30, follow.kill)  # a follow that never delivers fails instead of hanging
        deadline.start()
        try:
            assert follow.stdout is not None
            line = follow.stdout.readline()  # a line written after the follow began
            assert line.startswith("tick ") and int(line.split()[1]) > last
        finally:
            deadline.cancel()
            follow.kill()


def test_attach(shown: Pod) -> None:
    d = shown.daemon
    since = time.time()
    with subprocess.Popen([DOCKER, "attach", "--no-stdin", shown.shim_name("web")], env=d.docker_env(),
                          stdout=subprocess.PIPE, text=True) as attached:
        deadline = threading.Timer(30, attached.kill)
        deadline.start()
        try:
            assert attached.stdout is not None
            assert attached.stdout.readline().startswith("tick ")  # live output of the running container
        finally:
            deadline.cancel()
            attached.kill()
    assert cri.container_state(d.runtime(), shown.containers["web"]).state == api_pb2.CONTAINER_RUNNING
    assert "attach" in [e["Action"] for e in events_since(d, since, f"container={shown.shim_name('web')}")]


def test_exec_top_stats(shown: Pod) -> None:
    d = shown.daemon
    name = shown.shim_name("sidecar")
    assert ok(d, "exec", name, "sh", "-c", "echo in $(cat /proc/1/cmdline | tr '\\0' ' ')") == "in sleep 3600\n"
    p = docker(d, "exec", name, "sh", "-c", "exit 3")
    assert p.returncode == 3
    assert "sleep 3600" in ok(d, "top", name)
    row = ok(d, "stats", "--no-stream", "--format", "{{.Name}} {{.PIDs}} {{.MemUsage}}|{{.NetIO}}", name).split("|")
    assert row[0].split()[0] == name and int(row[0].split()[1]) >= 1
    assert row[1].strip() == "0B / 0B"  # a host-network pod: no interface of its own (moby shows none either)


def events(d: DaemonProcess) -> list[str]:
    """Every container event so far, as "<action> <name>"."""
    out = ok(d, "events", "--since", "0", "--until", str(int(time.time()) + 1), "--filter", "type=container",
             "--format", "{{.Action}} {{.Actor.Attributes.name}}")
    return out.splitlines()


def events_since(d: DaemonProcess, since: float, *filters: str) -> list[dict[str, Any]]:
    """Docker events from ``since`` until now, as JSON, with ``--filter`` ``filters``."""
    args = ["events", "--since", f"{since:.9f}", "--until", f"{time.time() + 1:.9f}", "--format", "{{json .}}"]
    for f in filters:
        args += ["--filter", f]
    return [json.loads(line) for line in ok(d, *args).splitlines() if line.strip()]


def test_events(shown: Pod) -> None:
    seen = events(shown.daemon)
    for container in ("web", "sidecar"):
        name = shown.shim_name(container)
        assert f"create {name}" in seen and f"start {name}" in seen


def test_docker_only_events(shown: Pod) -> None:
    """exec_create/exec_start/exec_die of a docker exec into kubelet's container, as moby logs them (Docker-only
    actions: kubelet's GetContainerEvents carries container transitions only)."""
    d = shown.daemon
    name = shown.shim_name("sidecar")
    since = time.time()
    assert docker(d, "exec", name, "sh", "-c", "exit 4").returncode == 4
    got = events_since(d, since, f"container={name}")
    assert [e["Action"] for e in got] == ["exec_create: sh -c exit 4", "exec_start: sh -c exit 4", "exec_die"]
    attributes = got[2]["Actor"]["Attributes"]
    assert attributes["exitCode"] == "4" and attributes["name"] == name and len(attributes["execID"]) == 64
    assert attributes["io.kubernetes.pod.uid"] == shown.config.metadata.uid
    assert got[0]["Actor"]["ID"] == shown.containers["sidecar"]
    by_label = events_since(d, since, f"label=io.kubernetes.pod.uid={shown.config.metadata.uid}")
    assert [e["Action"] for e in by_label] == [e["Action"] for e in got]


@pytest.mark.parametrize("args", [("rm", "-f"), ("stop",), ("kill",), ("pause",), ("restart",),
                                  ("rename", "@", "x"), ("update", "--memory", "64m"), ("commit",)])
def test_mutations_refused(shown: Pod, args: tuple[str, ...]) -> None:
    d = shown.daemon
    name = shown.shim_name("sidecar")
    argv = [a for a in args if a != "@"]
    argv.insert(args.index("@") if "@" in args else len(args), name)
    p = docker(d, *argv)
    assert p.returncode != 0 and "is managed by kubelet" in p.stderr, p.stderr
    state = cri.container_state(d.runtime(), shown.containers["sidecar"])
    assert state.state == api_pb2.CONTAINER_RUNNING


def test_system_df_counts_pods_containers_once(shown: Pod) -> None:
    rows = ok(shown.daemon, "system", "df", "--format", "{{.Type}} {{.TotalCount}} {{.Active}}").splitlines()
    assert "Containers 2 2" in rows, rows  # the pod's two running containers, nothing else on this daemon


def _metrics(d: DaemonProcess) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{d.metrics_port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_count_pods_containers_once(shown: Pod) -> None:
    """Shown through both faces, counted in one: kubelet's containers are the CRI front end's in
    narwhal_containers, and a docker exec into one is one exec."""
    d = shown.daemon
    before = _metrics(d)
    running = {fe: before.get(("narwhal_containers", frozenset({("frontend", fe), ("state", "running")})), 0.0)
               for fe in ("cri", "docker")}
    assert running == {"cri": 2.0, "docker": 0.0}
    ok(d, "exec", shown.shim_name("sidecar"), "true")
    after = _metrics(d)
    key = ("narwhal_container_execs_total", frozenset())
    assert after[key] - before.get(key, 0.0) == 1.0


def test_docker_prune_leaves_pods_alone(shown: Pod) -> None:
    d = shown.daemon
    ok(d, "container", "prune", "-f")
    assert len(d.runtime().ListContainers(api_pb2.ListContainersRequest(), timeout=10).containers) == 2


def test_switch_off_shows_nothing(registry: Registry, tmp_path: Path) -> None:
    d = start_daemon()
    try:
        pod = run_pod(d, registry, tmp_path)
        assert ok(d, "ps", "-a", "--format", "{{.Names}}").split() == []
        for ref in (pod.shim_name("web"), pod.containers["web"]):
            for verb in (("container", "inspect"), ("logs",), ("top",), ("exec",)):
                p = docker(d, *verb, ref, *(("true",) if verb == ("exec",) else ()))
                assert p.returncode != 0 and "No such container" in p.stderr, (verb, p.stderr)
        p = docker(d, "rm", "-f", pod.containers["web"])
        assert "No such container" in p.stderr
        remove_pod(pod)
        assert leftovers(d) == {}
    finally:
        d.destroy()


def test_may_stop_pods_kill_is_seen_by_kubelet(registry: Registry, tmp_path: Path) -> None:
    d = start_daemon("docker-shows-pods: true\ndocker-may-stop-pods: true\n")
    try:
        pod = run_pod(d, registry, tmp_path)
        rs = d.runtime()
        stream = rs.GetContainerEvents(api_pb2.GetEventsRequest(), timeout=60)
        with subprocess.Popen([DOCKER, "wait", pod.shim_name("sidecar")], env=d.docker_env(),
                              stdout=subprocess.PIPE, text=True) as waiting:
            ok(d, "kill", pod.shim_name("sidecar"))
            out, _ = waiting.communicate(timeout=30)
        assert out == "137\n"
        assert ok(d, "wait", pod.shim_name("sidecar")) == "137\n"  # already exited: at once
        status = cri.container_state(rs, pod.containers["sidecar"])
        assert status.state == api_pb2.CONTAINER_EXITED and status.exit_code == 137
        stopped = next(e for e in stream if e.container_id == pod.containers["sidecar"]
                       and e.container_event_type == api_pb2.CONTAINER_STOPPED_EVENT)
        assert stopped.pod_sandbox_status.id == pod.id
        stream.cancel()
        since = time.time()
        ok(d, "stop", "-t", "1", pod.shim_name("web"))  # sh as PID 1 ignores SIGTERM: SIGKILL after 1 s
        assert cri.container_state(rs, pod.containers["web"]).state == api_pb2.CONTAINER_EXITED
        with removal_wait(d, pod.shim_name("web")) as body:
            ok(d, "rm", pod.shim_name("web"))
            assert json.loads(body()) == {"StatusCode": 137, "Error": None}
        got = events_since(d, since, f"container={pod.shim_name('web')}")
        assert [(e["Action"], e["Actor"]["Attributes"].get("signal")) for e in got] == [
            ("kill", "15"), ("kill", "9"), ("die", None), ("stop", None), ("destroy", None)]
        seen = events(d)
        assert f"kill {pod.shim_name('sidecar')}" in seen
        assert f"die {pod.shim_name('sidecar')}" in seen and f"destroy {pod.shim_name('web')}" in seen
        listed = rs.ListContainers(api_pb2.ListContainersRequest(), timeout=10).containers
        assert [c.id for c in listed] == [pod.containers["sidecar"]]
        p = docker(d, "rename", pod.shim_name("sidecar"), "x")  # still refused: only stop/kill/rm are allowed
        assert p.returncode != 0 and "is managed by kubelet" in p.stderr
        # docker wait with condition=removed (docker run --rm's, docker-py's wait(condition="removed")) ends
        # when kubelet removes the container, with its exit code.
        with removal_wait(d, pod.containers["sidecar"]) as body:
            rs.RemoveContainer(api_pb2.RemoveContainerRequest(container_id=pod.containers["sidecar"]), timeout=60)
            assert json.loads(body()) == {"StatusCode": 137, "Error": None}
        remove_pod(pod)
        assert leftovers(d) == {}
    finally:
        d.destroy()


class _UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=60)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self._path)


@contextlib.contextmanager
def removal_wait(d: DaemonProcess, ref: str) -> Iterator[Callable[[], bytes]]:
    """POST /containers/{ref}/wait?condition=removed; yields once the daemon answered the headers (the wait is
    registered then), the callable reads the body (the outcome)."""
    conn = _UnixHTTP(str(d.docker_socket))
    try:
        conn.request("POST", f"/v1.41/containers/{ref}/wait?condition=removed")
        response = conn.getresponse()
        assert response.status == 200, response.read()
        yield response.read
    finally:
        conn.close()
