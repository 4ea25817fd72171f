"""CRI behaviour kubelet relies on under load, which critest does not cover.

* GetContainerEvents (kubelet's Evented PLEG): 1000 events from 500 containers created and removed
  concurrently over 10 pods reach a subscriber, none lost, none duplicated, in order per container.
* ListContainers and ListPodSandbox with 500 objects answer complete; their latency is printed (run
  with ``-s``) and recorded in docs/critest.md, never asserted (speed lives in hack/bench).
* A stalled pull is cancelled (kubelet's --image-pull-progress-deadline, narwhald's
  image-pull-progress-timeout) and leaves nothing behind.
"""
from __future__ import annotations

import statistics
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import mkimage
import pytest
from cri_api.v1 import api_pb2
from lib import cri
from lib.cni_host import InstanceNetwork
from lib.daemon import DaemonProcess, start_daemon
from lib.leaks import leftovers
from lib.registry import Registry
from lib.slowproxy import SlowProxy

PODS, CONTAINERS_PER_POD = 10, 50
WORKERS = 8


@pytest.fixture(scope="module")
def loaded(registry: Registry) -> Iterator[tuple[DaemonProcess, str]]:
    d = start_daemon()
    try:
        ref = cri.push_busybox(registry)
        cri.pull(d.images(), ref)
        yield d, ref
        assert leftovers(d) == {}
    finally:
        network = InstanceNetwork.of(d.root, d.base / "net.d")
        d.destroy()
        network.remove()


def _p50_ms(call: Callable[[], object], rounds: int = 20) -> float:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def _host_pod(rs: object, name: str) -> str:
    config = cri.sandbox_config(name=name, host_network=True)
    return str(rs.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=config), timeout=120).pod_sandbox_id)  # type: ignore[attr-defined]


def test_container_events_under_load(loaded: tuple[DaemonProcess, str]) -> None:
    daemon, image = loaded
    rs = daemon.runtime()
    pods = [_host_pod(rs, f"events-{i}") for i in range(PODS)]
    seen: list[tuple[str, int]] = []
    stream = rs.GetContainerEvents(api_pb2.GetEventsRequest(), timeout=600)
    errors: list[grpc.RpcError] = []

    def consume() -> None:
        try:
            for event in stream:
                seen.append((event.container_id, event.container_event_type))
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.CANCELLED:
                errors.append(err)

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    # The stream is live once the server has it: a probe container's CREATED event arrives.
    probe = rs.CreateContainer(api_pb2.CreateContainerRequest(
        pod_sandbox_id=pods[0], config=cri.container_config(image, ["sleep", "1"], name="probe")),
        timeout=60).container_id
    cri.wait_for(lambda: any(c == probe for c, _ in seen), timeout=30, what="the subscription to be live")
    rs.RemoveContainer(api_pb2.RemoveContainerRequest(container_id=probe), timeout=60)
    cri.wait_for(lambda: len([c for c, _ in seen if c == probe]) == 2, timeout=30, what="the probe's DELETED event")
    seen.clear()

    def create(index: int) -> str:
        pod = pods[index % PODS]
        config = cri.container_config(image, ["sleep", "3600"], name=f"load-{index}")
        return str(rs.CreateContainer(api_pb2.CreateContainerRequest(pod_sandbox_id=pod, config=config),
                                      timeout=120).container_id)

    total = PODS * CONTAINERS_PER_POD
    with ThreadPoolExecutor(WORKERS) as pool:
        ids = list(pool.map(create, range(total)))
        listed = rs.ListContainers(api_pb2.ListContainersRequest(), timeout=60).containers
        assert sorted(c.id for c in listed) == sorted(ids)
        list_ms = _p50_ms(lambda: rs.ListContainers(api_pb2.ListContainersRequest(), timeout=60))
        filtered_ms = _p50_ms(lambda: rs.ListContainers(api_pb2.ListContainersRequest(
            filter=api_pb2.ContainerFilter(pod_sandbox_id=pods[0])), timeout=60))
        print(f"\nListContainers with {total} containers: p50 {list_ms:.1f} ms; one pod's 50: p50 {filtered_ms:.1f} ms")
        list(pool.map(lambda cid: rs.RemoveContainer(api_pb2.RemoveContainerRequest(container_id=cid), timeout=120),
                      ids))

    cri.wait_for(lambda: len(seen) >= 2 * total, timeout=120, what=f"{2 * total} events (have {len(seen)})")
    stream.cancel()
    reader.join(10)
    assert errors == []
    by_container: dict[str, list[int]] = defaultdict(list)
    for cid, kind in seen:
        by_container[cid].append(kind)
    assert len(seen) == 2 * total, f"{len(seen)} events for {total} containers created and removed"
    assert set(by_container) == set(ids)
    wrong = {cid: kinds for cid, kinds in by_container.items()
             if kinds != [api_pb2.CONTAINER_CREATED_EVENT, api_pb2.CONTAINER_DELETED_EVENT]}
    assert wrong == {}, f"{len(wrong)} containers with lost, duplicated or reordered events"
    for pod in pods:
        rs.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod), timeout=120)


def test_list_pod_sandbox_with_500_pods(loaded: tuple[DaemonProcess, str]) -> None:
    daemon, _ = loaded
    rs = daemon.runtime()
    with ThreadPoolExecutor(WORKERS) as pool:
        pods = list(pool.map(lambda i: _host_pod(rs, f"many-{i}"), range(500)))
        listed = rs.ListPodSandbox(api_pb2.ListPodSandboxRequest(), timeout=60).items
        assert sorted(p.id for p in listed) == sorted(pods)
        assert all(p.state == api_pb2.SANDBOX_READY for p in listed)
        list_ms = _p50_ms(lambda: rs.ListPodSandbox(api_pb2.ListPodSandboxRequest(), timeout=60))
        one_ms = _p50_ms(lambda: rs.ListPodSandbox(api_pb2.ListPodSandboxRequest(
            filter=api_pb2.PodSandboxFilter(id=pods[0])), timeout=60))
        print(f"\nListPodSandbox with 500 pods: p50 {list_ms:.1f} ms; by id: p50 {one_ms:.1f} ms")
        list(pool.map(lambda p: rs.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=p), timeout=120),
                      pods))
    assert rs.ListPodSandbox(api_pb2.ListPodSandboxRequest(), timeout=60).items == []


def test_stalled_pull_is_cancelled(registry: Registry, daemon_factory: Callable[..., DaemonProcess]) -> None:
    """A registry that stops sending mid-layer: each attempt is cut after the progress timeout, resumed from
    what arrived while that grows, and the pull fails UNAVAILABLE well before the client's deadline."""
    image = mkimage.build("busybox", filler_layers=1, filler_mb=2)
    mkimage.RegistryClient(registry.host).push_image("load/stalled", "latest", image)
    # One byte per second: the proxy sends a first KiB, then sleeps ~17 minutes before the next.
    proxy = SlowProxy(("127.0.0.1", registry.port), bytes_per_second=1).start()
    try:
        d = daemon_factory(config_yaml="image-pull-progress-timeout: 1\n")
        ref = f"{proxy.host}/load/stalled:latest"
        start = time.monotonic()
        with pytest.raises(grpc.RpcError) as failed:
            d.images().PullImage(api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=ref)), timeout=120)
        elapsed = time.monotonic() - start
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE, failed.value
        assert elapsed < 100, f"the pull took {elapsed:.0f} s: the progress timeout did not cut it"
        assert d.images().ListImages(api_pb2.ListImagesRequest(), timeout=30).images == []
        assert leftovers(d) == {}
    finally:
        proxy.stop()
