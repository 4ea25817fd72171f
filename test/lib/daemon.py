"""Run a real narwhald as a subprocess for integration tests."""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from cri_api.v1 import api_pb2_grpc

REPO = Path(__file__).resolve().parents[2]
NARWHALD = REPO / ".venv" / "bin" / "narwhald"


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


@dataclass
class DaemonProcess:
    base: Path
    args: list[str]
    metrics_port: int
    proc: subprocess.Popen[bytes] | None = None
    extra_config: str = ""
    wrapper: list[str] = field(default_factory=list)  # e.g. nsexec.argv(netns): run narwhald inside a netns
    _channel: grpc.Channel | None = field(default=None, repr=False)

    @property
    def root(self) -> Path:
        return self.base / "root"

    @property
    def state(self) -> Path:
        return self.base / "state"

    @property
    def cri_socket(self) -> Path:
        return self.state / "cri.sock"

    @property
    def docker_socket(self) -> Path:
        return self.state / "docker.sock"

    @property
    def log_path(self) -> Path:
        return self.base / "narwhald.log"

    @property
    def containerd_pid(self) -> int:
        return int((self.state / "containerd" / "containerd.pid").read_text())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, timeout: float = 60.0, env: dict[str, str] | None = None) -> None:
        offset = len(self.log())
        with open(self.log_path, "ab") as logfile:
            self.proc = subprocess.Popen([*self.wrapper, str(NARWHALD), *self.args], stdout=logfile, stderr=logfile,
                                         env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"narwhald exited with {self.proc.returncode}:\n{self.log()[offset:]}")
            if "narwhald ready" in self.log()[offset:]:
                return
            time.sleep(0.1)
        raise TimeoutError(f"narwhald did not become ready:\n{self.log()}")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._close_channel()

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        finally:
            self._close_channel()

    def _close_channel(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def channel(self) -> grpc.Channel:
        if self._channel is None:
            self._channel = grpc.insecure_channel(f"unix://{self.cri_socket}")
        return self._channel

    def runtime(self) -> api_pb2_grpc.RuntimeServiceStub:
        return api_pb2_grpc.RuntimeServiceStub(self.channel())

    def images(self) -> api_pb2_grpc.ImageServiceStub:
        return api_pb2_grpc.ImageServiceStub(self.channel())

    def docker_env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": f"unix://{self.docker_socket}"}

    def destroy(self) -> None:
        """Stop narwhald and its containerd, then remove every file and mount it made.

        Containers a failed test left running are killed first (through containerd, so their
        shims exit too): nothing outlives the test.  ``narwhald cleanup`` removes the instance's
        host objects (bridges, firewall chains, cgroup parents); the steps after it are a fallback."""
        self.stop()
        self.cleanup("--force", "--remove-dirs")
        self._kill_tasks()
        for pid_file in (self.state / "docker" / "swarm" / "etcd.pid", self.state / "logs" / "service.pid",
                         self.state / "containerd" / "containerd.pid"):
            _terminate(pid_file)
        for mount in reversed(mounts_under(self.base)):
            subprocess.run(["umount", "-l", mount], check=False, capture_output=True)
        # The instance's (now empty) default cgroup parent in every hierarchy.
        instance = hashlib.sha256(str(self.root.resolve()).encode()).hexdigest()[:8]
        for parent in Path("/sys/fs/cgroup").glob(f"*/narwhal-{instance}*"):
            with contextlib.suppress(OSError):
                parent.rmdir()
        shutil.rmtree(self.base, ignore_errors=True)


    def cleanup(self, *flags: str) -> subprocess.CompletedProcess[str]:
        """``narwhald cleanup`` of this instance (same flags as the daemon); its failure is reported, not raised."""
        result = subprocess.run([*self.wrapper, str(NARWHALD), "cleanup", *flags, *self.args], capture_output=True,
                                text=True, timeout=180)
        if result.returncode != 0:
            print(f"narwhald cleanup of {self.base} failed ({result.returncode}): {result.stderr}")
        return result

    def _kill_tasks(self) -> None:
        sock = self.state / "containerd" / "containerd.sock"
        if not sock.exists():
            return
        for namespace in ("narwhal", "narwhal-docker"):  # the CRI and Docker domains
            ctr = ["ctr", "--address", str(sock), "-n", namespace]
            listed = subprocess.run([*ctr, "tasks", "ls", "-q"], capture_output=True, text=True, timeout=30)
            for task in listed.stdout.split():
                subprocess.run([*ctr, "tasks", "rm", "-f", task], capture_output=True, timeout=30)


def _terminate(pid_file: Path) -> None:
    """SIGTERM the process of a pid file (containerd, a swarm's etcd member), SIGKILL after 5 s."""
    if not pid_file.exists():
        return
    try:
        pid = int(pid_file.read_text())
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            os.kill(pid, 0)
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, ValueError):
        pass


def mounts_under(path: Path) -> list[str]:
    prefix = str(path).rstrip("/") + "/"
    result = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mount_point = line.split()[4].replace("\\040", " ")
        if mount_point.startswith(prefix):
            result.append(mount_point)
    return result


def start_daemon(config_yaml: str = "", extra_args: list[str] | None = None, start: bool = True,
                 cni_conf: bool = True) -> DaemonProcess:
    base = Path(tempfile.mkdtemp(prefix="nw-", dir="/tmp"))
    port = free_port()
    conf_dir = base / "net.d"
    conf_dir.mkdir()
    args = [
        "--root", str(base / "root"),
        "--state", str(base / "state"),
        "--metrics-address", f"127.0.0.1:{port}",
        "--cni-conf-dir", str(conf_dir),
        "--log-level", "debug",
        # Run any suite with a config lever on, e.g. NARWHAL_TEST_FLAGS="--log-service false" (a test's own
        # extra_args come after, so they win).
        *os.environ.get("NARWHAL_TEST_FLAGS", "").split(),
        *(extra_args or []),
    ]
    if config_yaml:
        cfg = base / "narwhal.yaml"
        cfg.write_text(config_yaml)
        args += ["--config", str(cfg)]
    d = DaemonProcess(base=base, args=args, metrics_port=port)
    if start:
        try:
            d.start()
        except BaseException:
            d.destroy()  # a daemon that failed to start must not leave its dirs (or containerd) behind
            raise
    return d



# conftest.py's ``daemon_factory`` fixture: start_daemon's keyword arguments in, a started daemon out.
DaemonFactory = Callable[..., DaemonProcess]


def containerd_calls(daemon: DaemonProcess) -> dict[str, float]:
    """narwhald's containerd calls so far, "Service/Method" -> count (its /metrics)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{daemon.metrics_port}/metrics", timeout=10).read().decode()
    calls: dict[str, float] = {}
    for labels, count in re.findall(r'^narwhal_containerd_request_duration_seconds_count\{([^}]*)\} (\S+)$', text,
                                    re.M):
        found = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        calls[f"{found['service']}/{found['method']}"] = float(count)
    return calls
