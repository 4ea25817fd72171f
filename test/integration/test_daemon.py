"""The foundation end to end: a real narwhald with its own containerd, driven by real clients."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request

import grpc
import pytest
from cri_api.v1 import api_pb2
from lib.daemon import DaemonFactory, DaemonProcess, mounts_under, start_daemon


def containerd_pids_for(d: DaemonProcess) -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"containerd --config {d.state}/containerd/config.toml"],
                         capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def test_cri_version_and_status(daemon: DaemonProcess) -> None:
    rs = daemon.runtime()
    version = rs.Version(api_pb2.VersionRequest(), timeout=10)
    assert version.runtime_name == "narwhal"
    assert version.runtime_api_version == "v1"
    status = rs.Status(api_pb2.StatusRequest(verbose=True), timeout=10)
    conds = {c.type: c for c in status.status.conditions}
    assert conds["RuntimeReady"].status is True
    # An empty conf dir gets narwhal's default network on first start.
    assert conds["NetworkReady"].status is True
    assert (daemon.base / "net.d" / "10-narwhal.conflist").exists()
    info = json.loads(status.info["config"])
    assert info["containerdAddress"].startswith(str(daemon.state))


def test_network_ready_follows_conf_dir(daemon: DaemonProcess) -> None:
    conf_dir = daemon.base / "net.d"
    (conf_dir / "10-narwhal.conflist").unlink()
    (conf_dir / "10-broken.conflist").write_text("{not json")
    deadline = time.monotonic() + 30
    while (cond := _network_condition(daemon)).status and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not cond.status and cond.reason == "InvalidNetworkConfig" and "10-broken" in cond.message
    (conf_dir / "20-ok.conflist").write_text(json.dumps(
        {"cniVersion": "1.0.0", "name": "ok", "plugins": [{"type": "loopback"}]}))
    while not (cond := _network_condition(daemon)).status and time.monotonic() < deadline + 30:
        time.sleep(0.2)
    assert cond.status is True


def _network_condition(d: DaemonProcess) -> api_pb2.RuntimeCondition:
    status = d.runtime().Status(api_pb2.StatusRequest(), timeout=10)
    return next(c for c in status.status.conditions if c.type == "NetworkReady")


def test_impossible_rpcs_answer_unimplemented_clearly(daemon: DaemonProcess) -> None:
    with pytest.raises(grpc.RpcError) as err:
        daemon.runtime().CheckpointContainer(api_pb2.CheckpointContainerRequest(container_id="x"), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "CRIU" in err.value.details()


def test_docker_cli_version_and_ping(daemon: DaemonProcess) -> None:
    out = subprocess.run(["docker", "version", "--format", "{{json .Server}}"], env=daemon.docker_env(),
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    server = json.loads(out.stdout)
    assert server["ApiVersion"] == "1.53" and server["MinAPIVersion"] == "1.40"
    assert {c["Name"] for c in server["Components"]} >= {"Engine", "containerd", "runc"}
    curl = ["curl", "-s", "--unix-socket", str(daemon.docker_socket)]
    head = subprocess.run([*curl, "-I", "http://d/_ping"], capture_output=True, text=True, check=True)
    assert "200 OK" in head.stdout and "Api-Version: 1.53" in head.stdout and "Swarm: inactive" in head.stdout
    missing = subprocess.run([*curl, "-w", "%{http_code}", "http://d/v1.41/nope"],
                             capture_output=True, text=True, check=True)
    assert missing.stdout.endswith("404") and json.loads(missing.stdout[:-3])["message"]
    too_new = subprocess.run([*curl, "http://d/v9.99/version"], capture_output=True, text=True, check=True)
    assert "too new" in json.loads(too_new.stdout)["message"]
    too_old = subprocess.run([*curl, "http://d/v1.39/version"], capture_output=True, text=True, check=True)
    assert "too old" in json.loads(too_old.stdout)["message"]


def test_metrics(daemon: DaemonProcess) -> None:
    daemon.runtime().Version(api_pb2.VersionRequest(), timeout=10)
    body = urllib.request.urlopen(f"http://127.0.0.1:{daemon.metrics_port}/metrics", timeout=10).read().decode()
    assert "narwhal_containerd_up 1.0" in body
    assert 'narwhal_cri_requests_total{code="OK",method="Version"}' in body


def test_kill9_restart_reuses_containerd(daemon: DaemonProcess) -> None:
    pid = daemon.containerd_pid
    daemon.kill9()
    assert containerd_pids_for(daemon) == [pid], "containerd must survive narwhald's death"
    daemon.start()
    assert "adopting running containerd" in daemon.log()
    assert daemon.containerd_pid == pid
    assert containerd_pids_for(daemon) == [pid]
    assert daemon.runtime().Version(api_pb2.VersionRequest(), timeout=10).runtime_name == "narwhal"


def test_watchdog_restarts_dead_containerd(daemon: DaemonProcess) -> None:
    old = daemon.containerd_pid
    os.kill(old, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pids = containerd_pids_for(daemon)
        if pids and pids != [old]:
            break
        time.sleep(0.2)
    assert containerd_pids_for(daemon) and containerd_pids_for(daemon) != [old]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = daemon.runtime().Status(api_pb2.StatusRequest(), timeout=10)
        if next(c for c in status.status.conditions if c.type == "RuntimeReady").status:
            break
        time.sleep(0.2)
    else:
        pytest.fail("RuntimeReady did not come back")


def test_two_daemons_side_by_side(daemon_factory: DaemonFactory) -> None:
    a = daemon_factory()
    b = daemon_factory()
    assert a.containerd_pid != b.containerd_pid
    for d in (a, b):
        assert d.runtime().Version(api_pb2.VersionRequest(), timeout=10).runtime_name == "narwhal"
    a.stop()
    assert b.runtime().Status(api_pb2.StatusRequest(), timeout=10).status.conditions[0].status


def test_second_daemon_on_same_root_is_refused(daemon: DaemonProcess) -> None:
    twin = DaemonProcess(base=daemon.base, args=daemon.args, metrics_port=daemon.metrics_port)
    with pytest.raises(RuntimeError, match="another narwhald is running"):
        twin.start(timeout=30)
    assert daemon.runtime().Version(api_pb2.VersionRequest(), timeout=10).runtime_name == "narwhal"


def test_bad_config_is_refused_clearly() -> None:
    d = start_daemon(config_yaml="root: /tmp/x\nnot-an-option: 1\n", start=False)
    try:
        with pytest.raises(RuntimeError) as err:
            d.start(timeout=30)
        assert "unknown option 'not-an-option'" in str(err.value)
        assert "Traceback" not in str(err.value)
    finally:
        d.destroy()


def test_clean_shutdown_leaves_nothing(daemon_factory: DaemonFactory) -> None:
    d = daemon_factory(extra_args=["--stop-containerd-on-exit", "true"])
    assert d.stop() == 0
    assert containerd_pids_for(d) == []
    assert not d.cri_socket.exists() and not d.docker_socket.exists()
    assert mounts_under(d.base) == []
