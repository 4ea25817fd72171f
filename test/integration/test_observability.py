"""Observability end to end: a scripted workload against the scraped /metrics (and promtool), Docker events
through the real docker CLI, a killed events reader, SIGHUP reloading the log format, request ids in logs."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cri_api.v1 import api_pb2
from lib import cri, images
from lib.cni_host import InstanceNetwork
from lib.daemon import DaemonProcess, start_daemon
from lib.registry import Registry
from prometheus_client.parser import text_string_to_metric_families

DOCKER = "/usr/local/bin/docker"
Key = tuple[str, frozenset[tuple[str, str]]]


@pytest.fixture(scope="module")
def nw() -> Iterator[DaemonProcess]:
    """One narwhald for the module, with a config file (the SIGHUP test rewrites it)."""
    d = start_daemon(config_yaml="log-format: text\n")
    yield d
    network = InstanceNetwork.of(d.root, d.base / "net.d")
    d.destroy()
    network.remove()


def scrape(d: DaemonProcess) -> tuple[str, dict[Key, float]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{d.metrics_port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    values = {(s.name, frozenset(s.labels.items())): s.value
              for family in text_string_to_metric_families(text) for s in family.samples}
    return text, values


def value(values: dict[Key, float], name: str, **labels: str) -> float:
    return values.get((name, frozenset(labels.items())), 0.0)


def delta(before: dict[Key, float], after: dict[Key, float], name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def total(values: dict[Key, float], name: str, **labels: str) -> float:
    """Sum over every series of ``name`` that has at least ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in values.items() if n == name and want <= ls)


def promtool_problems(text: str) -> str:
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is missing: run `make setup` (Debian package prometheus)"
    done = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=60)
    return (done.stdout + done.stderr).decode().strip()


def test_scripted_workload_agrees_with_the_scraped_metrics(nw: DaemonProcess, registry: Registry,
                                                          tmp_path: Path) -> None:
    built = images.push(registry.host, "obs/busybox", "v1")
    images.push_built(registry.host, "obs/busybox", "v2", built)
    blob_bytes = len(built.config.data) + sum(len(layer.data) for layer in built.layers)
    rs, ims = nw.runtime(), nw.images()
    _, before = scrape(nw)

    # N = 2 pulls (the second finds every blob present), and one of a missing tag.
    ref = cri.pull(ims, f"{registry.host}/obs/busybox:v1")
    cri.pull(ims, f"{registry.host}/obs/busybox:v2")
    assert cri.code_of(lambda: cri.pull(ims, f"{registry.host}/obs/busybox:nope")) == grpc.StatusCode.NOT_FOUND

    # M = 3 containers started (each logs two lines), K = 4 execs, then all stopped and removed.
    sandbox = rs.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=cri.sandbox_config(log_dir=tmp_path)),
                               timeout=60).pod_sandbox_id
    cids = []
    for i in range(3):
        config = cri.container_config(ref, ["sh", "-c", "echo hello; echo world; exec sleep 60"], name=f"c{i}",
                                      log_path=f"c{i}.log")
        cid = rs.CreateContainer(api_pb2.CreateContainerRequest(pod_sandbox_id=sandbox, config=config,
                                                                sandbox_config=cri.sandbox_config()),
                                 timeout=60).container_id
        rs.StartContainer(api_pb2.StartContainerRequest(container_id=cid), timeout=60)
        cids.append(cid)
    for i in range(4):
        assert rs.ExecSync(api_pb2.ExecSyncRequest(container_id=cids[i % 3], cmd=["true"], timeout=30),
                           timeout=60).exit_code == 0
    assert cri.code_of(lambda: rs.StartContainer(api_pb2.StartContainerRequest(container_id="f" * 64),
                                                 timeout=10)) == grpc.StatusCode.NOT_FOUND
    cri.wait_for(lambda: all((tmp_path / f"c{i}.log").exists() and
                             len((tmp_path / f"c{i}.log").read_text().splitlines()) == 2 for i in range(3)),
                 what="container output")
    _, running = scrape(nw)
    assert value(running, "narwhal_containers", frontend="cri", state="running") == 3
    assert value(running, "narwhal_sandboxes", frontend="cri", state="ready") == 1
    assert value(running, "narwhal_image_pulls_in_progress") == 0

    for cid in cids:
        rs.StopContainer(api_pb2.StopContainerRequest(container_id=cid, timeout=0), timeout=60)
    _, stopped = scrape(nw)
    assert value(stopped, "narwhal_containers", frontend="cri", state="exited") == 3
    log_bytes = sum((tmp_path / f"c{i}.log").stat().st_size for i in range(3))
    assert delta(before, stopped, "narwhal_container_log_lines_total", frontend="cri") == 6
    assert delta(before, stopped, "narwhal_container_log_bytes_total", frontend="cri") == log_bytes

    for cid in cids:
        rs.RemoveContainer(api_pb2.RemoveContainerRequest(container_id=cid), timeout=60)
    rs.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=sandbox), timeout=60)
    rs.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=sandbox), timeout=60)
    text, after = scrape(nw)

    assert promtool_problems(text) == ""
    # images
    assert delta(before, after, "narwhal_image_pulls_total", result="success") == 2
    assert delta(before, after, "narwhal_image_pulls_total", result="not_found") == 1
    assert delta(before, after, "narwhal_image_pull_duration_seconds_count") == 2
    assert delta(before, after, "narwhal_image_pull_bytes_total") == blob_bytes
    # lifecycle, by front end
    for action, count in (("create", 3), ("start", 4), ("stop", 3), ("remove", 3)):  # one start of a missing ID
        assert delta(before, after, "narwhal_lifecycle_duration_seconds_count",
                     frontend="cri", object="container", action=action) == count, action
    assert delta(before, after, "narwhal_lifecycle_errors_total", frontend="cri", object="container",
                 action="start", kind="not_found") == 1
    for action in ("run", "stop", "remove"):
        assert delta(before, after, "narwhal_lifecycle_duration_seconds_count",
                     frontend="cri", object="sandbox", action=action) == 1, action
    assert total(after, "narwhal_lifecycle_duration_seconds_count", frontend="docker") == 0
    assert value(after, "narwhal_containers", frontend="cri", state="exited") == 0
    assert value(after, "narwhal_sandboxes", frontend="cri", state="ready") == 0
    # logs survive the containers' removal
    assert delta(before, after, "narwhal_container_log_lines_total", frontend="cri") == 6
    assert delta(before, after, "narwhal_container_log_bytes_total", frontend="cri") == log_bytes
    # execs and CRI requests (method, code)
    assert delta(before, after, "narwhal_container_execs_total") == 4
    assert delta(before, after, "narwhal_cri_requests_total", method="ExecSync", code="OK") == 4
    assert delta(before, after, "narwhal_cri_requests_total", method="StartContainer", code="OK") == 3
    assert delta(before, after, "narwhal_cri_requests_total", method="StartContainer", code="NOT_FOUND") == 1
    assert delta(before, after, "narwhal_cri_requests_total", method="PullImage", code="NOT_FOUND") == 1
    assert delta(before, after, "narwhal_cri_request_duration_seconds_count", method="CreateContainer") == 3
    # containerd calls: one task per container start, one exec process per exec (sent to the task's shim
    # directly: shim-direct, on by default)
    assert delta(before, after, "narwhal_containerd_request_duration_seconds_count",
                 service="Tasks", method="Create") == 3
    assert delta(before, after, "narwhal_containerd_request_duration_seconds_count",
                 service="shim", method="Exec") == 4
    assert delta(before, after, "narwhal_containerd_request_duration_seconds_count",
                 service="Tasks", method="Exec") == 0
    # CNI: the pod's network was set up and torn down
    assert total(after, "narwhal_cni_operation_duration_seconds_count", command="ADD") > \
        total(before, "narwhal_cni_operation_duration_seconds_count", command="ADD")
    assert total(after, "narwhal_cni_operation_duration_seconds_count", command="DEL") > \
        total(before, "narwhal_cni_operation_duration_seconds_count", command="DEL")
    assert delta(before, after, "narwhal_events_published_total") >= 12  # 3 x created, started, stopped, deleted


def _docker(d: DaemonProcess, *args: str, timeout: float = 120) -> str:
    done = subprocess.run([DOCKER, *args], env=d.docker_env(), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _events(d: DaemonProcess, since: float, *filters: str) -> list[dict[str, Any]]:
    args = ["events", "--since", f"{since:.6f}", "--until", f"{time.time():.6f}", "--format", "{{json .}}"]
    for f in filters:
        args += ["--filter", f]
    return [json.loads(line) for line in _docker(d, *args).splitlines() if line]


def test_docker_events_through_the_cli(nw: DaemonProcess, registry: Registry) -> None:
    images.push(registry.host, "obs/dockerbox", "v1")
    ref = f"{registry.host}/obs/dockerbox:v1"
    since = time.time()
    _, before = scrape(nw)
    _docker(nw, "pull", ref)
    name = f"obs-{int(since)}"
    _docker(nw, "run", "-d", "--name", name, "--label", "team=obs", ref, "sh", "-c", "exit 3")
    cid = _docker(nw, "wait", name).strip() and _docker(nw, "inspect", "-f", "{{.Id}}", name).strip()
    _docker(nw, "rm", name)
    oom = f"hog-{int(since)}"  # a memory hog in 16 MiB: the OOM killer's exit is an event and a metric
    done = subprocess.run([DOCKER, "run", "--name", oom, "--memory", "16m", "--memory-swap", "16m", ref, "sh", "-c",
                           "dd if=/dev/zero of=/dev/null bs=32M"], env=nw.docker_env(), capture_output=True,
                          timeout=120)
    assert done.returncode == 137, done.stderr
    _docker(nw, "rm", oom)

    pulls = _events(nw, since, "type=image", "event=pull")
    assert [e["Actor"]["ID"] for e in pulls] == [ref]
    mine = _events(nw, since, "type=container", f"container={name}")
    assert [e["Action"] for e in mine] == ["create", "start", "die", "destroy"]
    die = mine[2]
    assert die["status"] == "die" and die["id"] == cid and die["from"] == ref and die["scope"] == "local"
    attributes = dict(die["Actor"]["Attributes"])
    assert attributes.pop("execDuration").isdigit()  # whole seconds run, as moby's
    assert attributes == {"exitCode": "3", "image": ref, "name": name, "team": "obs"}
    assert _events(nw, since, "type=container", "label=team=other") == []
    hog = _events(nw, since, "type=container", f"container={oom}")
    assert [e["Action"] for e in hog] == ["create", "attach", "start", "oom", "die", "destroy"]  # run attaches
    assert hog[4]["Actor"]["Attributes"]["exitCode"] == "137"
    # CRI containers of the other test never reach Docker's events (one bus, two domains).
    assert {e["Actor"]["Attributes"]["name"] for e in _events(nw, 0, "type=container")} == {
        name, oom}

    text, after = scrape(nw)
    assert promtool_problems(text) == ""  # with the Docker series too
    assert delta(before, after, "narwhal_docker_requests_total", route="/images/create", method="POST",
                 status="200") == 1
    assert delta(before, after, "narwhal_lifecycle_duration_seconds_count", frontend="docker", object="container",
                 action="start") == 2
    assert delta(before, after, "narwhal_container_oom_kills_total", frontend="docker") == 1
    assert delta(before, after, "narwhal_container_oom_kills_total", frontend="cri") == 0


def test_a_killed_events_reader_is_released_and_never_blocks(nw: DaemonProcess, registry: Registry) -> None:
    ref = cri.push_busybox(registry, "obs/killed", "v1")
    _docker(nw, "pull", ref)
    _, before = scrape(nw)
    reader = subprocess.Popen([DOCKER, "events"], env=nw.docker_env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        cri.wait_for(lambda: value(scrape(nw)[1], "narwhal_event_subscribers") ==
                     value(before, "narwhal_event_subscribers") + 1, what="the reader to subscribe")
        reader.send_signal(signal.SIGKILL)
        reader.wait(10)
        for _ in range(3):  # containers keep starting while the dead reader's subscription is collected
            _docker(nw, "run", "--rm", ref, "true")
        cri.wait_for(lambda: value(scrape(nw)[1], "narwhal_event_subscribers") ==
                     value(before, "narwhal_event_subscribers"), what="the dead reader to be released")
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait(10)
    _, after = scrape(nw)
    assert delta(before, after, "narwhal_lifecycle_duration_seconds_count", frontend="docker", object="container",
                 action="start") == 3
    assert delta(before, after, "narwhal_event_subscriber_overflows_total") == 0


def test_sighup_switches_to_json_logs_with_request_ids(nw: DaemonProcess) -> None:
    assert nw.proc is not None
    config = nw.base / "narwhal.yaml"
    daemon_id = _docker(nw, "info", "--format", "{{.ID}}").strip()
    config.write_text("log-format: json\nmax-concurrent-downloads: 7\n")
    offset = len(nw.log())
    nw.proc.send_signal(signal.SIGHUP)
    cri.wait_for(lambda: "configuration reloaded" in nw.log()[offset:], what="the reload")
    rs = nw.runtime()
    sandbox = rs.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=cri.sandbox_config(host_network=True)),
                               timeout=60).pod_sandbox_id
    rs.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=sandbox), timeout=60)
    cri.wait_for(lambda: "RemovePodSandbox -> OK" in nw.log()[offset:], what="the request's log line")
    lines = [json.loads(line) for line in nw.log()[offset:].splitlines() if line.startswith("{")]
    assert any("max-concurrent-downloads changed; restart" in line["msg"] for line in lines)
    run = [line for line in lines if line["msg"].startswith("RunPodSandbox -> OK")]
    remove = [line for line in lines if line["msg"].startswith("RemovePodSandbox -> OK")]
    assert len(run) == 1 and len(remove) == 1
    assert len(run[0]["request_id"]) == 16 and run[0]["request_id"] != remove[0]["request_id"]
    assert run[0]["level"] == "debug" and run[0]["logger"] == "narwhal.cri"
    reloads = _events(nw, 0, "type=daemon", f"daemon={daemon_id}")
    assert [(e["Action"], e["Actor"]["Attributes"]["log-format"]) for e in reloads] == [
        ("reload", "json")]
