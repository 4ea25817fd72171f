#!/usr/bin/env python3
"""Pod and container lifecycle latency over CRI: narwhald against containerd's own CRI plugin (the anchor).

Both runtimes get the same machine, the same offline busybox image from a local
registry, the same kind of CNI network (bridge + host-local + portmap) and the
same workload, driven by the same CRI client: N pods, one after another, each
RunPodSandbox -> CreateContainer -> StartContainer, then StopPodSandbox ->
RemovePodSandbox.  Reported: median and p90 per call, the ratio narwhal /
containerd, and narwhald's RSS after the run.  (containerd always starts a
pause container per pod; narwhald only when the pod shares its PID namespace.)

    .venv/bin/python hack/bench/pods.py [--pods 20]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "test"), str(REPO / "hack")]

import grpc  # noqa: E402
import mkimage  # noqa: E402
from cri_api.v1 import api_pb2, api_pb2_grpc  # noqa: E402
from lib import cri  # noqa: E402
from lib.daemon import start_daemon  # noqa: E402
from lib.registry import Registry, start_registry  # noqa: E402

STEPS = ("run_pod", "create", "start", "stop_pod", "remove_pod")


def containerd_cri(base: Path, registry: Registry) -> tuple[subprocess.Popen[bytes], Path]:
    """containerd 1.6 with its CRI plugin, private dirs, a mirror for the local registry, its own CNI net."""
    conf_dir = base / "net.d"
    conf_dir.mkdir(parents=True)
    (conf_dir / "10-bench.conflist").write_text(json.dumps({
        "cniVersion": "1.0.0", "name": "ctrbench", "plugins": [
            {"type": "bridge", "bridge": "ctrbench0", "isGateway": True, "ipMasq": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.124.250.0/24"}]],
                      "dataDir": str(base / "ipam")}},
            {"type": "portmap", "capabilities": {"portMappings": True}}]}))
    sock = base / "containerd.sock"
    config = base / "config.toml"
    config.write_text(f"""version = 2
root = "{base}/root"
state = "{base}/state"
[grpc]
  address = "{sock}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{registry.host}/library/pause:latest"
  restrict_oom_score_adj = true  # root here lacks CAP_SYS_RESOURCE, as narwhald clamps too
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{conf_dir}"
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."{registry.host}"]
    endpoint = ["http://{registry.host}"]
""")
    proc = subprocess.Popen(["containerd", "--config", str(config)], stdout=subprocess.DEVNULL,
                            stderr=open(base / "containerd.log", "wb"), start_new_session=True)  # noqa: SIM115
    cri.wait_for(lambda: sock.exists(), 30, "containerd CRI socket")
    return proc, sock


def workload(channel: grpc.Channel, image: str, pods: int, log_dir: Path) -> dict[str, list[float]]:
    rs = api_pb2_grpc.RuntimeServiceStub(channel)
    api_pb2_grpc.ImageServiceStub(channel).PullImage(
        api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=image)), timeout=300)
    times: dict[str, list[float]] = {step: [] for step in STEPS}

    def timed(step: str, method: Callable[..., Any], request: object) -> Any:
        start = time.perf_counter()
        result = method(request, timeout=120)
        times[step].append(time.perf_counter() - start)
        return result

    ids = []
    for i in range(pods):
        config = cri.sandbox_config(name=f"bench-{i}", log_dir=log_dir)
        sid = timed("run_pod", rs.RunPodSandbox, api_pb2.RunPodSandboxRequest(config=config)).pod_sandbox_id
        cid = timed("create", rs.CreateContainer, api_pb2.CreateContainerRequest(
            pod_sandbox_id=sid, config=cri.container_config(image, ["sleep", "3600"], log_path=f"{i}.log"),
            sandbox_config=config)).container_id
        timed("start", rs.StartContainer, api_pb2.StartContainerRequest(container_id=cid))
        ids.append(sid)
    for sid in ids:
        timed("stop_pod", rs.StopPodSandbox, api_pb2.StopPodSandboxRequest(pod_sandbox_id=sid))
        timed("remove_pod", rs.RemovePodSandbox, api_pb2.RemovePodSandboxRequest(pod_sandbox_id=sid))
    return times


def _ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", type=int, default=20)
    args = parser.parse_args()
    registry = start_registry()
    client = mkimage.RegistryClient(registry.host)
    client.push_image("library/busybox", "latest", mkimage.build("busybox"))
    client.push_image("library/pause", "latest", mkimage.build("pause"))
    image = f"{registry.host}/library/busybox:latest"
    base = Path(tempfile.mkdtemp(prefix="nw-bench-"))
    results: dict[str, dict[str, list[float]]] = {}
    daemon = start_daemon()
    ctrd: subprocess.Popen[bytes] | None = None
    try:
        with grpc.insecure_channel(f"unix://{daemon.cri_socket}") as channel:
            results["narwhal"] = workload(channel, image, args.pods, base / "logs-narwhal")
        assert daemon.proc is not None
        rss = _rss_kb(daemon.proc.pid)
        ctrd, sock = containerd_cri(base / "containerd", registry)
        with grpc.insecure_channel(f"unix://{sock}") as channel:
            results["containerd"] = workload(channel, image, args.pods, base / "logs-containerd")
    finally:
        daemon.destroy()
        if ctrd is not None:
            os.killpg(ctrd.pid, signal.SIGTERM)
            ctrd.wait(30)
            subprocess.run(["ip", "link", "del", "ctrbench0"], capture_output=True, check=False)
            for line in reversed(Path("/proc/self/mountinfo").read_text().splitlines()):
                if str(base) in line.split()[4]:
                    subprocess.run(["umount", "-l", line.split()[4]], check=False)
        shutil.rmtree(base, ignore_errors=True)
        registry.stop()
    print(f"{args.pods} pods, one busybox container each, sequential; milliseconds")
    print(f"{'call':<12}{'narwhal p50':>13}{'p90':>8}{'containerd p50':>16}{'p90':>8}{'ratio p50':>11}")
    for step in STEPS:
        n, c = results["narwhal"][step], results["containerd"][step]
        ratio = statistics.median(n) / statistics.median(c)
        print(f"{step:<12}{_ms(n, .5):>13.1f}{_ms(n, .9):>8.1f}{_ms(c, .5):>16.1f}{_ms(c, .9):>8.1f}{ratio:>11.2f}")
    total_n = sum(sum(v) for v in results["narwhal"].values())
    total_c = sum(sum(v) for v in results["containerd"].values())
    print(f"{'total':<12}{total_n:>12.2f}s{'':>8}{total_c:>15.2f}s{'':>8}{total_n / total_c:>11.2f}")
    print(f"narwhald RSS after the run: {rss / 1024:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
