"""CRI benchmarks, driven by one gRPC client against narwhald and against containerd's CRI plugin.

Every system is up at once and each benchmark runs on them in alternating turns (the host may be busy
with other work: interleaving spreads that load over both).  In this order: RSS right after start
(the caller measures it); one untimed warm-up pod; ``pods`` pods one after
another (RunPodSandbox, CreateContainer, StartContainer, StopContainer, StopPodSandbox,
RemovePodSandbox, each timed); ExecSync on one running container; ``concurrent`` pods started at once
(wall time from the first RunPodSandbox to the last StartContainer); a container writing ``log_mb`` MB
to stdout (throughput until its last line is in the log file); PullImage of a multi-layer image
(removed before each pull).  RSS with ``rss_pods`` pods (and twice that) running is taken before the
bursts, logs and pulls, whose buffers would otherwise still be counted.
"""
from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import breakdown
import grpc
from anchors import System, rss_mib
from cri_api.v1 import api_pb2, api_pb2_grpc
from lib import cri
from results import Results

GROUP = "CRI"
ANCHOR = "containerd"
CALLS = ("RunPodSandbox", "CreateContainer", "StartContainer", "StopContainer", "StopPodSandbox",
         "RemovePodSandbox")
# Issue 21's targets (Narwhal p50 / containerd p50).
TARGETS = {"RunPodSandbox": 0.6, "CreateContainer": 1.0, "StartContainer": 0.8}
# PID 1 of a container ignores SIGTERM unless it handles it: trap it, so StopContainer measures a
# graceful stop rather than the grace period.  The timed lifecycle waits for READY in the log before
# stopping (a SIGTERM that beats the trap would cost the whole grace period, on a busy host).
STOPPABLE = ["sh", "-c", "trap 'exit 0' TERM; echo READY; sleep 3600 & wait"]
LINE = 80
END_MARK = b"BENCH-END"


@dataclass(frozen=True)
class CriPlan:
    pods: int = 30
    execs: int = 30
    concurrent: int = 30
    concurrent_rounds: int = 2
    log_mb: int = 200
    log_rounds: int = 1
    pulls: int = 3
    rss_pods: int = 50


def declare(results: Results, plan: CriPlan) -> None:
    for call in CALLS:
        results.row(GROUP, call, "ms", ANCHOR, target=TARGETS.get(call))
    results.row(GROUP, "ExecSync", "ms", ANCHOR, target=1.0, note="`true` in a running container")
    results.row(GROUP, "PullImage", "s", ANCHOR, target=0.8, note="multi-layer image from the local registry")
    results.row(GROUP, f"{plan.concurrent} pods started concurrently", "s", ANCHOR, target=0.6,
                note="wall time, RunPodSandbox+CreateContainer+StartContainer each")
    results.row(GROUP, f"log throughput ({plan.log_mb} MB to stdout)", "MB/s", ANCHOR, lower_is_better=False,
                target=4.0,
                note=f"{LINE}-byte lines; until the last line is in the CRI log file")
    results.row(GROUP, "daemon RSS idle", "MiB", ANCHOR, limit=50.0,  # issue 21 (60 in issue 9)
                note="narwhald vs containerd (with CRI), fresh start")
    for n in (plan.rss_pods, 2 * plan.rss_pods):
        results.row(GROUP, f"daemon RSS with {n} pods", "MiB", ANCHOR, limit=125.0 if n == 100 else None,
                    note="narwhald vs containerd (with CRI)")
    results.row(GROUP, f"RSS with {plan.rss_pods} pods incl. own containerd", "MiB", ANCHOR, target=1.0,
                note="narwhald + the containerd it runs vs containerd (with CRI)")


# What kubelet sends for an ordinary pod's container (kubelet 1.29, pkg/kubelet/kuberuntime: security_context.go
# takes the masked and read-only paths of the default proc mount from pkg/securitycontext, and
# namespacesForPod gives the container the pod's network and IPC namespaces and a PID namespace of its own).
# A request without them is not what a node's runtime sees, and the two runtimes read it differently:
# containerd's CRI then applies no masked paths and joins its pause container's PID namespace, narwhald applies
# containerd's default paths and gives the container a PID namespace of its own: 16 more mounts in runc init
# (docs/benchmarks.md, "The bench's containers as kubelet asks for them (round nine)").
KUBELET_MASKED_PATHS = ["/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                        "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
                        "/sys/devices/virtual/powercap"]
KUBELET_READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]


def kubelet_container(image: str, command: list[str], log_path: str) -> api_pb2.ContainerConfig:
    """The bench's container, as kubelet would ask for it."""
    security = api_pb2.LinuxContainerSecurityContext(
        namespace_options=api_pb2.NamespaceOption(network=api_pb2.POD, pid=api_pb2.CONTAINER, ipc=api_pb2.POD),
        masked_paths=KUBELET_MASKED_PATHS, readonly_paths=KUBELET_READONLY_PATHS)
    return cri.container_config(image, command, log_path=log_path,
                                linux=api_pb2.LinuxContainerConfig(security_context=security))


class Driver:
    """A thin synchronous CRI client with timing."""

    def __init__(self, system: System, images: dict[str, str], results: Results) -> None:
        assert system.cri_socket is not None
        self.system = system
        self.channel = grpc.insecure_channel(f"unix://{system.cri_socket}")
        self.rs = api_pb2_grpc.RuntimeServiceStub(self.channel)
        self.ims = api_pb2_grpc.ImageServiceStub(self.channel)
        self.images = images
        self.results = results
        self.log_dir = system.base / "bench-logs"
        self._names = itertools.count()
        self.last = -1  # the number of the last pod made (its container logs to <log_dir>/<n>.log)

    def close(self) -> None:
        self.channel.close()

    def timed(self, name: str | None, method: Callable[..., Any], request: object, timeout: float = 120) -> Any:
        start = time.perf_counter()
        reply = method(request, timeout=timeout)
        if name is not None:
            self.results.add(GROUP, name, self.system.name, 1000 * (time.perf_counter() - start))
        return reply

    def pull(self, ref: str, name: str | None = None) -> None:
        request = api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=ref))
        start = time.perf_counter()
        self.ims.PullImage(request, timeout=600)
        if name is not None:
            self.results.add(GROUP, name, self.system.name, time.perf_counter() - start)

    def remove_image(self, ref: str) -> None:
        self.ims.RemoveImage(api_pb2.RemoveImageRequest(image=api_pb2.ImageSpec(image=ref)), timeout=120)

    def pod(self, command: list[str], timed: bool = False) -> tuple[str, str, api_pb2.PodSandboxConfig]:
        """RunPodSandbox + CreateContainer + StartContainer; returns (sandbox, container, config)."""
        i = self.last = next(self._names)
        config = cri.sandbox_config(name=f"bench-{i}", log_dir=self.log_dir)
        label = (lambda call: call) if timed else (lambda call: None)
        sid = self.timed(label("RunPodSandbox"), self.rs.RunPodSandbox,
                         api_pb2.RunPodSandboxRequest(config=config)).pod_sandbox_id
        cid = self.timed(label("CreateContainer"), self.rs.CreateContainer, api_pb2.CreateContainerRequest(
            pod_sandbox_id=sid, config=kubelet_container(self.images["busybox"], command, f"{i}.log"),
            sandbox_config=config)).container_id
        self.timed(label("StartContainer"), self.rs.StartContainer, api_pb2.StartContainerRequest(container_id=cid))
        return sid, cid, config

    def teardown(self, sid: str, cid: str | None = None, timed: bool = False) -> None:
        label = (lambda call: call) if timed else (lambda call: None)
        if cid is not None:
            self.timed(label("StopContainer"), self.rs.StopContainer,
                       api_pb2.StopContainerRequest(container_id=cid, timeout=10))
        self.timed(label("StopPodSandbox"), self.rs.StopPodSandbox, api_pb2.StopPodSandboxRequest(pod_sandbox_id=sid))
        self.timed(label("RemovePodSandbox"), self.rs.RemovePodSandbox,
                   api_pb2.RemovePodSandboxRequest(pod_sandbox_id=sid))

    def rss(self) -> dict[str, float]:
        return {name: rss_mib(pid) for name, pid in self.system.daemon_pids().items()}


def _own_rss(system: System, rss: dict[str, float]) -> float:
    """The daemon users would compare: narwhald alone, or containerd with its CRI plugin."""
    return rss["narwhald"] if system.name == "narwhal" else rss["containerd"]


def record_idle_rss(system: System, results: Results) -> None:
    """Right after start (the caller's moment), once start-up work has settled."""
    samples = []
    for _ in range(5):
        time.sleep(0.4)
        samples.append(_own_rss(system, {name: rss_mib(pid) for name, pid in system.daemon_pids().items()}))
    results.add(GROUP, "daemon RSS idle", system.name, statistics.median(samples))


def settled_rss(d: Driver, seconds: float = 2.0) -> dict[str, float]:
    """Median of a few samples once start-up or creation work has settled (RSS moves as arenas are trimmed)."""
    samples = []
    for _ in range(5):
        time.sleep(seconds / 5)
        samples.append(d.rss())
    return {name: statistics.median(s[name] for s in samples) for name in samples[0]}


def _interleaved(drivers: list[Driver], rounds: int) -> list[tuple[int, Driver]]:
    """Round by round, alternating which system goes first, so load from elsewhere on the machine
    (a shared CI host) falls on both alike."""
    order = []
    for i in range(rounds):
        for d in drivers if i % 2 == 0 else list(reversed(drivers)):
            order.append((i, d))
    return order


def run(systems: list[System], images: dict[str, str], plan: CriPlan, results: Results,
        log: Callable[[str], None]) -> None:
    """Every system is up; each benchmark runs on all of them interleaved round by round."""
    drivers = [Driver(system, images, results) for system in systems]
    try:
        _run(drivers, plan, results, log)
    finally:
        for d in drivers:
            d.close()


def _run(drivers: list[Driver], plan: CriPlan, results: Results, log: Callable[[str], None]) -> None:
    broken: set[str] = set()

    def each(rows: list[str], rounds: int, step: Callable[[Driver], None]) -> None:
        """A failing round is counted against its rows (shown in the table) without discarding the
        samples of the rounds that worked; rows with no sample at all for a system are n/a for it."""
        for i, d in _interleaved(drivers, rounds):
            if d.system.name in broken:
                continue
            try:
                step(d)
            except Exception as err:  # noqa: BLE001 - recorded, the run goes on
                log(f"  {d.system.name} {', '.join(rows)}: round {i} failed: {err!r}")
                for row in rows:
                    results.get(GROUP, row).failed(d.system.name, err)

    for d in drivers:
        try:
            d.pull(d.images["busybox"])
            if d.system.name == ANCHOR:
                d.pull(d.images["pause"])  # containerd would otherwise pull it inside the first RunPodSandbox
            sid, cid, _ = d.pod(STOPPABLE)  # warm-up: first-use costs (snapshots, CNI config) are not measured
            d.teardown(sid, cid)
        except Exception as err:  # noqa: BLE001 - the other system still runs
            log(f"  {d.system.name}: set-up failed: {err!r}")
            broken.add(d.system.name)
            for row in results.rows:
                if row.group == GROUP:
                    results.fail(GROUP, [row.name], d.system.name, err)

    log(f"  {plan.pods} pod lifecycles each")

    def lifecycle(d: Driver) -> None:
        sid, cid, _ = d.pod(STOPPABLE, timed=True)
        log_path = d.log_dir / f"{d.last}.log"
        deadline = time.monotonic() + 30
        while not _contains(log_path, b"READY") and time.monotonic() < deadline:
            time.sleep(0.005)
        d.teardown(sid, cid, timed=True)

    metered = [d for d in drivers if d.system.metrics_url]
    before = {d.system.name: breakdown.scrape(d.system.metrics_url) for d in metered}  # type: ignore[arg-type]
    each(list(CALLS), plan.pods, lifecycle)
    for d in metered:
        after = breakdown.scrape(d.system.metrics_url)  # type: ignore[arg-type]
        results.breakdown[f"{d.system.name}, CRI pod lifecycle"] = {
            "unit": "pod lifecycle", "calls": breakdown.diff(before[d.system.name], after, plan.pods)}

    log(f"  {plan.execs} ExecSync each")
    execs = {}
    for d in drivers:
        if d.system.name not in broken:
            execs[d.system.name] = d.pod(STOPPABLE)

    def exec_sync(d: Driver) -> None:
        reply = d.timed("ExecSync", d.rs.ExecSync,
                        api_pb2.ExecSyncRequest(container_id=execs[d.system.name][1], cmd=["true"], timeout=10))
        if reply.exit_code != 0:
            raise RuntimeError(f"ExecSync true exited {reply.exit_code}: {reply.stderr!r}")

    before = {d.system.name: breakdown.scrape(d.system.metrics_url) for d in metered}  # type: ignore[arg-type]
    try:
        each(["ExecSync"], plan.execs, exec_sync)
        for d in metered:
            after = breakdown.scrape(d.system.metrics_url)  # type: ignore[arg-type]
            results.breakdown[f"{d.system.name}, ExecSync"] = {
                "unit": "ExecSync", "calls": breakdown.diff(before[d.system.name], after, plan.execs)}
    finally:
        for d in drivers:
            if d.system.name in execs:
                d.teardown(*execs[d.system.name][:2])

    log(f"  RSS with {plan.rss_pods} and {2 * plan.rss_pods} pods, one system at a time")
    names = [f"daemon RSS with {plan.rss_pods} pods", f"daemon RSS with {2 * plan.rss_pods} pods",
             f"RSS with {plan.rss_pods} pods incl. own containerd"]

    def rss_with_pods(d: Driver) -> None:
        pods: list[tuple[str, str | None]] = []
        try:
            for n in (plan.rss_pods, 2 * plan.rss_pods):
                with ThreadPoolExecutor(8) as pool:
                    pods += [(sid, None) for sid, _, _ in
                             pool.map(lambda _: d.pod(["sleep", "3600"]), range(n - len(pods)))]
                rss = settled_rss(d)
                results.add(GROUP, f"daemon RSS with {n} pods", d.system.name, _own_rss(d.system, rss))
                if n == plan.rss_pods:
                    results.add(GROUP, names[2], d.system.name, sum(rss.values()))
        finally:
            _teardown_all(d, pods)

    each(names, 1, rss_with_pods)

    concurrent_row = f"{plan.concurrent} pods started concurrently"
    log(f"  {plan.concurrent} concurrent pods x{plan.concurrent_rounds} each")

    def burst(d: Driver) -> None:
        with ThreadPoolExecutor(plan.concurrent) as pool:
            start = time.perf_counter()
            futures = [pool.submit(d.pod, STOPPABLE) for _ in range(plan.concurrent)]
            wait(futures)
            elapsed = time.perf_counter() - start
        started = [f.result() for f in futures if f.exception() is None]
        _teardown_all(d, [(sid, None) for sid, _, _ in started])
        for f in futures:
            if f.exception() is not None:
                raise f.exception()  # type: ignore[misc]
        results.add(GROUP, concurrent_row, d.system.name, elapsed)

    each([concurrent_row], plan.concurrent_rounds, burst)

    log_row = f"log throughput ({plan.log_mb} MB to stdout)"
    log(f"  {plan.log_mb} MB of logs x{plan.log_rounds} each")
    each([log_row], plan.log_rounds,
         lambda d: results.add(GROUP, log_row, d.system.name, _log_throughput(d, plan.log_mb)))

    log(f"  {plan.pulls} pulls of {drivers[0].images['big']} each")

    def pull(d: Driver) -> None:
        d.pull(d.images["big"], "PullImage")
        d.remove_image(d.images["big"])

    each(["PullImage"], plan.pulls, pull)



def _teardown_all(d: Driver, pods: list[tuple[str, str | None]]) -> None:
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda p: d.teardown(*p), pods))


def _log_throughput(d: Driver, megabytes: int) -> float:
    """MB/s of container output, from StartContainer until the container's last line is in its log."""
    total = megabytes * 1_000_000 // LINE * LINE
    command = ["sh", "-c", f"yes {'x' * (LINE - 1)} | head -c {total}; echo {END_MARK.decode()}"]
    i = next(d._names)
    config = cri.sandbox_config(name=f"bench-log-{i}", log_dir=d.log_dir)
    sid = d.rs.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=config), timeout=120).pod_sandbox_id
    try:
        cid = d.rs.CreateContainer(api_pb2.CreateContainerRequest(
            pod_sandbox_id=sid, config=kubelet_container(d.images["busybox"], command, f"log-{i}.log"),
            sandbox_config=config), timeout=120).container_id
        path = d.log_dir / f"log-{i}.log"
        start = time.perf_counter()
        d.rs.StartContainer(api_pb2.StartContainerRequest(container_id=cid), timeout=120)
        deadline = start + 600
        while not _contains(path, END_MARK, tail=256):
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{END_MARK.decode()} not in {path} after 600 s")
            time.sleep(0.01)
        elapsed = time.perf_counter() - start
        size = path.stat().st_size
        if size < total:
            raise RuntimeError(f"log file {path} has {size} bytes for {total} bytes of output")
        return total / 1e6 / elapsed
    finally:
        d.teardown(sid)


def _contains(path: Path, needle: bytes, tail: int = 4096) -> bool:
    """Whether the last ``tail`` bytes of ``path`` hold ``needle``."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - tail))
            return needle in f.read()
    except OSError:
        return False
