"""crictl (cri-tools v1.29, built from source by hack/critest.sh) as a second real CRI client.

Every workflow an operator runs by hand: runp/create/start, ps/pods, inspect/inspectp, logs -f,
exec (plain, with stdin, with a tty), attach, port-forward, stats/statsp, images/rmi,
stop/rm/stopp/rmp and info, each output checked. The binary is looked up in ``$CRITOOLS_BIN``
(default /tmp/critools/bin, where ``hack/critest.sh --build-only`` puts it); without it the module
is skipped: CI has no copy of cri-tools' source.
"""
from __future__ import annotations

import json
import os
import pty
import re
import select
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lib import cri
from lib.cni_host import InstanceNetwork
from lib.daemon import DaemonProcess, start_daemon
from lib.docker import mirror_config
from lib.leaks import leftovers
from lib.registry import Registry

CRICTL = Path(os.environ.get("CRITOOLS_BIN", "/tmp/critools/bin")) / "crictl"
pytestmark = pytest.mark.skipif(
    not CRICTL.exists(),
    reason=f"no crictl at {CRICTL}: build it with `hack/critest.sh --build-only` (needs a cri-tools v1.29.0 source "
           "copy, which CI does not have) or point CRITOOLS_BIN at a directory holding it")

# critest's pod names are this long (create-PodSandbox-for-container-<uuid>: 68 bytes), and it leaves
# the hostname empty: the pod must run, with the node's hostname.
LONG_NAME = "create-PodSandbox-for-container-" + str(uuid.uuid4())
TICKER = "echo hello; i=0; while true; do echo tick $i; i=$((i+1)); sleep 1; done"


class Crictl:
    def __init__(self, daemon: DaemonProcess, workdir: Path) -> None:
        endpoint = f"unix://{daemon.cri_socket}"
        self.base = [str(CRICTL), "-r", endpoint, "-i", endpoint, "-t", "60s"]
        self.workdir = workdir

    def run(self, *args: str, input_: str | None = None, check: bool = True,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([*self.base, *args], capture_output=True, text=True, input=input_, timeout=timeout,
                              cwd=self.workdir)
        if check and proc.returncode != 0:
            raise AssertionError(f"crictl {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
        return proc

    def out(self, *args: str) -> str:
        return self.run(*args).stdout.strip()

    def json(self, *args: str) -> Any:
        return json.loads(self.out(*args))

    def popen(self, *args: str, **kwargs: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen([*self.base, *args], cwd=self.workdir, **kwargs)

    def write(self, name: str, config: dict[str, Any]) -> str:
        path = self.workdir / name
        path.write_text(json.dumps(config))
        return str(path)


@pytest.fixture(scope="module")
def crictl_daemon(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Crictl]:
    """One narwhald whose docker.io mirror is the session registry, so ``busybox`` resolves offline."""
    cri.push_busybox(registry)
    d = start_daemon(mirror_config(registry.host))
    try:
        yield Crictl(d, tmp_path_factory.mktemp("crictl"))
        assert leftovers(d) == {}, "crictl's rm/rmp must leave nothing behind"
    finally:
        network = InstanceNetwork.of(d.root, d.base / "net.d")
        d.destroy()
        network.remove()


@pytest.fixture
def c(crictl_daemon: Crictl) -> Iterator[Crictl]:
    yield crictl_daemon
    pods = crictl_daemon.out("pods", "-q").split()
    for pod in pods:  # tolerant cleanup of what a failed test left
        crictl_daemon.run("stopp", pod, check=False)
        crictl_daemon.run("rmp", "-f", pod, check=False)


def pod_config(c: Crictl, name: str = LONG_NAME, **extra: Any) -> tuple[str, str]:
    """A pod config file as critest writes them (no hostname) with a log directory; returns (path, log dir)."""
    log_dir = c.workdir / f"logs-{uuid.uuid4().hex[:8]}"
    log_dir.mkdir()
    config = {"metadata": {"name": name, "namespace": "crictl", "uid": uuid.uuid4().hex, "attempt": 1},
              "log_directory": str(log_dir), "linux": {}, **extra}
    return c.write(f"pod-{uuid.uuid4().hex[:8]}.json", config), str(log_dir)


def container_config(c: Crictl, name: str, command: list[str], **extra: Any) -> str:
    config = {"metadata": {"name": name}, "image": {"image": "busybox"}, "command": command,
              "log_path": f"{name}.log", **extra}
    return c.write(f"{name}-{uuid.uuid4().hex[:8]}.json", config)


def run_pod_with(c: Crictl, name: str, command: list[str], **extra: Any) -> tuple[str, str, str]:
    """runp + create + start; returns (pod id, container id, log dir)."""
    c.run("pull", "busybox")
    pod_file, log_dir = pod_config(c)
    pod = c.out("runp", pod_file)
    cid = c.out("create", pod, container_config(c, name, command, **extra), pod_file)
    assert c.out("start", cid) == cid
    return pod, cid, log_dir


def wait_state(c: Crictl, cid: str, state: str) -> None:
    cri.wait_for(lambda: c.json("inspect", cid)["status"]["state"] == state, timeout=60, what=f"{cid[:12]} {state}")


def test_info_and_version(c: Crictl) -> None:
    conditions = {cond["type"]: cond["status"] for cond in c.json("info")["status"]["conditions"]}
    assert conditions == {"RuntimeReady": True, "NetworkReady": True}
    version = c.out("version")
    assert re.search(r"^RuntimeName:\s+narwhal", version, re.M), version
    assert re.search(r"^RuntimeApiVersion:\s+v1$", version, re.M), version


def test_images_pull_list_remove(c: Crictl, registry: Registry) -> None:
    cri.push_busybox(registry, tag="crictl-rmi")
    pulled = c.out("pull", "busybox:crictl-rmi")
    image_id = re.fullmatch(r"Image is up to date for (sha256:[0-9a-f]{64})", pulled)
    assert image_id, pulled
    table = c.out("images")
    assert re.search(r"^docker\.io/library/busybox\s+crictl-rmi\s+[0-9a-f]{13}\s+\S+", table, re.M), table
    assert image_id.group(1).removeprefix("sha256:") in c.out("images", "-q", "--no-trunc").replace("sha256:", "")
    status = c.json("inspecti", "busybox:crictl-rmi")["status"]
    assert "docker.io/library/busybox:crictl-rmi" in status["repoTags"]
    assert c.out("rmi", "busybox:crictl-rmi") == "Deleted: docker.io/library/busybox:crictl-rmi"
    assert "crictl-rmi" not in c.out("images")
    again = c.run("rmi", "busybox:crictl-rmi", check=False)
    assert again.returncode == 1 and "no such image" in again.stderr


def test_pod_and_container_lifecycle(c: Crictl) -> None:
    pod, cid, log_dir = run_pod_with(c, "ticker", ["sh", "-c", TICKER])
    pods = c.out("pods", "--name", LONG_NAME[:20])
    assert re.search(rf"^{pod[:13]}\s+.*\s+Ready\s+{re.escape(LONG_NAME)}\s+crictl\s+1\s", pods, re.M), pods
    assert c.out("pods", "-q") == pod
    sandbox = c.json("inspectp", pod)
    assert sandbox["status"]["state"] == "SANDBOX_READY"
    assert sandbox["status"]["metadata"]["name"] == LONG_NAME
    assert re.fullmatch(r"\d+\.\d+\.\d+\.\d+", sandbox["status"]["network"]["ip"])
    pod_info = sandbox["info"]  # containerd's keys (toCRISandboxInfo)
    assert pod_info["netNamespaceClosed"] is False and pod_info["runtimeType"] == "io.containerd.runc.v2"
    assert pod_info["config"]["name"] == LONG_NAME and pod_info["config"]["hostname"] == ""

    wait_state(c, cid, "CONTAINER_RUNNING")
    ps = c.out("ps")
    assert re.search(rf"^{cid[:13]}\s+busybox\s+.*\s+Running\s+ticker\s+0\s+{pod[:13]}\s", ps, re.M), ps
    assert c.out("ps", "-q", "--pod", pod) == cid
    inspected = c.json("inspect", cid)
    assert inspected["status"]["logPath"] == f"{log_dir}/ticker.log"
    assert inspected["status"]["imageRef"].startswith("sha256:")
    info = inspected["info"]  # containerd's keys (toCRIContainerInfo)
    assert info["sandboxID"] == pod and info["pid"] > 0 and info["removing"] is False
    assert (info["snapshotKey"], info["snapshotter"]) == (cid, "overlayfs")
    assert info["runtimeType"] == "io.containerd.runc.v2"
    assert info["runtimeSpec"]["process"]["args"] == ["sh", "-c", TICKER]
    assert info["config"]["name"] == "ticker"

    # The pod's hostname is the node's: critest's pods leave it empty and their names do not fit.
    assert c.out("exec", cid, "hostname") == socket.gethostname()
    assert c.out("exec", cid, "sh", "-c", "echo $HOSTNAME") == socket.gethostname()

    cri.wait_for(lambda: "tick 1" in c.out("logs", cid), timeout=30, what="two ticks in crictl logs")
    assert c.out("logs", cid).splitlines()[:2] == ["hello", "tick 0"]
    assert c.out("logs", "--tail", "1", cid).startswith("tick ")

    stop = c.out("stop", "-t", "2", cid)
    assert stop == cid
    assert c.json("inspect", cid)["status"]["state"] == "CONTAINER_EXITED"
    assert cid in c.out("ps", "-a", "-q", "--state", "exited")
    assert c.out("ps", "-q") == ""
    assert c.out("rm", cid) == cid
    assert c.out("ps", "-a", "-q") == ""
    assert c.out("stopp", pod) == f"Stopped sandbox {pod}"
    assert c.json("inspectp", pod)["status"]["state"] == "SANDBOX_NOTREADY"
    assert c.out("rmp", pod) == f"Removed sandbox {pod}"
    assert c.out("pods", "-q") == ""
    missing = c.run("inspectp", pod, check=False)
    assert missing.returncode == 1 and "NotFound" in missing.stderr


def test_logs_follow(c: Crictl) -> None:
    _, cid, _ = run_pod_with(c, "follow", ["sh", "-c", TICKER])
    with c.popen("logs", "-f", cid, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as proc:
        assert proc.stdout is not None
        seen: list[bytes] = []
        try:
            deadline = time.monotonic() + 30
            while b"tick 3\n" not in seen and time.monotonic() < deadline:
                ready, _, _ = select.select([proc.stdout], [], [], 1)
                if ready:
                    line = proc.stdout.readline()
                    if not line:
                        break
                    seen.append(line)
            following = proc.poll() is None
        finally:
            proc.kill()
    assert seen[:2] == [b"hello\n", b"tick 0\n"] and b"tick 3\n" in seen, seen
    assert following, "logs -f must keep following a running container"
    # Once the container exits, logs -f returns by itself.
    c.run("stop", "-t", "1", cid)
    assert c.run("logs", "-f", cid, timeout=30).stdout.startswith("hello\ntick 0\n")


def test_exec(c: Crictl) -> None:
    _, cid, _ = run_pod_with(c, "exec", ["sleep", "3600"])
    wait_state(c, cid, "CONTAINER_RUNNING")
    assert c.out("exec", cid, "echo", "hi") == "hi"
    # --sync is ExecSync: crictl prints the whole stdout, then the whole stderr, each with a newline.
    assert c.out("exec", "--sync", cid, "sh", "-c", "echo out; echo err >&2").split() == ["out", "err"]
    assert c.run("exec", "-i", cid, "cat", input_="data over stdin\n").stdout == "data over stdin\n"
    failed = c.run("exec", cid, "sh", "-c", "exit 3", check=False)
    assert failed.returncode == 1 and "exit code 3" in failed.stderr


def test_exec_tty(c: Crictl) -> None:
    """``crictl exec -it`` needs a terminal on its side too: run it on a pty, type into a shell."""
    _, cid, _ = run_pod_with(c, "tty", ["sleep", "3600"])
    wait_state(c, cid, "CONTAINER_RUNNING")
    controller, terminal = pty.openpty()
    proc = c.popen("exec", "-it", cid, "sh", stdin=terminal, stdout=terminal, stderr=terminal)
    os.close(terminal)
    output = b""
    try:
        os.write(controller, b"tty; echo answer=$((6*7)); exit 5\n")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            ready, _, _ = select.select([controller], [], [], 0.5)
            if ready:
                try:
                    output += os.read(controller, 4096)
                except OSError:  # EIO: the other side closed
                    break
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(controller)
    text = output.decode(errors="replace")
    assert re.search(r"^/dev/pts/\d+\r$", text, re.M), text
    assert "answer=42\r\n" in text, text
    assert proc.returncode != 0  # the shell's exit 5 reaches crictl as a failed exec


def test_attach(c: Crictl) -> None:
    """stdin_once: the end of the attach's stdin closes the container's, and the attach keeps streaming the
    container's output until it exits (containerd's ContainerIO.Attach; kubectl attach's contract)."""
    _, cid, _ = run_pod_with(c, "attach", ["sh", "-c", "while read line; do echo got:$line; done; echo stdin-closed"],
                             stdin=True, stdin_once=True)
    wait_state(c, cid, "CONTAINER_RUNNING")
    attached = c.run("attach", "-i", cid, input_="one\ntwo\n", timeout=60)
    assert attached.stdout.splitlines() == ["got:one", "got:two", "stdin-closed"], attached
    wait_state(c, cid, "CONTAINER_EXITED")


def test_port_forward(c: Crictl) -> None:
    serve = "mkdir -p /www && echo served-by-pod > /www/index.html && exec httpd -f -p 8080 -h /www"
    pod, cid, _ = run_pod_with(c, "web", ["sh", "-c", serve])
    wait_state(c, cid, "CONTAINER_RUNNING")
    bodies: list[bytes] = []
    with c.popen("port-forward", pod, "0:8080", stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as proc:
        assert proc.stdout is not None
        try:
            line = proc.stdout.readline().decode()
            found = re.match(r"Forwarding from 127\.0\.0\.1:(\d+) -> 8080", line)
            assert found, line
            url = f"http://127.0.0.1:{found.group(1)}/index.html"

            def fetched() -> bool:
                try:
                    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - loopback
                        bodies.append(resp.read())
                    return True
                except OSError:
                    return False

            cri.wait_for(fetched, timeout=30, what=f"GET {url}")
        finally:
            proc.terminate()
    assert bodies[-1] == b"served-by-pod\n"


def test_stats(c: Crictl) -> None:
    pod, cid, _ = run_pod_with(c, "busy", ["sh", "-c", "while true; do :; done"])
    wait_state(c, cid, "CONTAINER_RUNNING")

    def used_cpu() -> bool:
        stats = c.json("stats", "-o", "json", "--id", cid)["stats"]
        return len(stats) == 1 and int(stats[0]["cpu"]["usageCoreNanoSeconds"]["value"]) > 0

    cri.wait_for(used_cpu, timeout=30, what="container CPU usage")
    stat = c.json("stats", "-o", "json", "--id", cid)["stats"][0]
    assert stat["attributes"]["id"] == cid and stat["attributes"]["metadata"]["name"] == "busy"
    assert int(stat["memory"]["workingSetBytes"]["value"]) > 0
    table = c.out("stats", "--id", cid)
    assert re.search(rf"^{cid[:13]}\s+busy\s+[\d.]+\s+\S+B\s+", table, re.M), table
    pod_stats = c.json("statsp", "-o", "json", "--id", pod)["stats"]
    assert [s["attributes"]["id"] for s in pod_stats] == [pod]
    assert int(pod_stats[0]["linux"]["cpu"]["usageCoreNanoSeconds"]["value"]) > 0
    assert [s["attributes"]["id"] for s in pod_stats[0]["linux"]["containers"]] == [cid]
    assert re.search(rf"^{re.escape(LONG_NAME)}\s+{pod[:13]}\s+[\d.]+\s+\S+B", c.out("statsp", "--id", pod), re.M)


def test_errors_and_idempotence(c: Crictl) -> None:
    missing = c.run("inspect", "0" * 64, check=False)
    assert missing.returncode == 1 and "NotFound" in missing.stderr
    # StopPodSandbox of an unknown pod succeeds (api.proto). crictl's rmp asks PodSandboxStatus first.
    assert c.out("stopp", "1" * 64) == f"Stopped sandbox {'1' * 64}"
    unknown = c.run("rmp", "1" * 64, check=False)
    assert unknown.returncode == 1 and "NotFound" in unknown.stderr
    bad = c.write("bad-pod.json", {"metadata": {"name": "bad", "namespace": "crictl", "uid": "u"},
                                   "hostname": "h" * 65})
    refused = c.run("runp", bad, check=False)
    assert refused.returncode == 1 and "InvalidArgument" in refused.stderr and "64 bytes" in refused.stderr
    assert c.out("pods", "-q") == ""


def test_runtime_config_and_imagefsinfo(c: Crictl) -> None:
    assert c.out("runtime-config").split() == ["cgroup", "driver:", "CGROUPFS"]
    fs = c.json("imagefsinfo")["status"]
    assert fs["imageFilesystems"][0]["fsId"]["mountpoint"].endswith("overlayfs")
    assert int(fs["imageFilesystems"][0]["usedBytes"]["value"]) > 0


def test_update_resources(c: Crictl) -> None:
    _, cid, _ = run_pod_with(c, "limited", ["sleep", "3600"])
    wait_state(c, cid, "CONTAINER_RUNNING")
    assert c.out("update", "--memory", str(64 << 20), "--cpu-quota", "20000", cid) == cid
    resources = c.json("inspect", cid)["status"]["resources"]["linux"]
    assert int(resources["memoryLimitInBytes"]) == 64 << 20 and int(resources["cpuQuota"]) == 20000
    assert c.out("exec", cid, "cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes") == str(64 << 20)


def test_run_and_events(c: Crictl) -> None:
    """``crictl run`` (runp + create + start in one) while ``crictl events`` streams the container's events."""
    c.run("pull", "busybox")
    with c.popen("events", "-o", "json", stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as events:
        assert events.stdout is not None
        try:
            pod_file, _ = pod_config(c)
            cid = c.out("run", container_config(c, "oneshot", ["sh", "-c", "exit 0"]), pod_file)
            wait_state(c, cid, "CONTAINER_EXITED")
            pod = c.json("inspect", cid)["info"]["sandboxID"]
            c.run("rmp", "-f", pod)
            kinds: list[str] = []
            buffer = ""
            deadline = time.monotonic() + 30
            while "CONTAINER_DELETED_EVENT" not in kinds and time.monotonic() < deadline:
                ready, _, _ = select.select([events.stdout], [], [], 1)
                if not ready:
                    continue
                chunk = os.read(events.stdout.fileno(), 65536).decode()
                if not chunk:
                    break
                buffer += chunk
                kinds = [e["containerEventType"] for e in _json_objects(buffer) if e.get("containerId") == cid]
        finally:
            events.kill()
    assert kinds == ["CONTAINER_CREATED_EVENT", "CONTAINER_STARTED_EVENT", "CONTAINER_STOPPED_EVENT",
                     "CONTAINER_DELETED_EVENT"], kinds


def _json_objects(text: str) -> list[dict[str, Any]]:
    """The complete JSON objects in a stream of pretty-printed ones (crictl events -o json)."""
    decoder, index = json.JSONDecoder(), 0
    objects: list[dict[str, Any]] = []
    while True:
        start = text.find("{", index)
        if start < 0:
            return objects
        try:
            obj, index = decoder.raw_decode(text, start)
        except ValueError:
            return objects
        objects.append(obj)
