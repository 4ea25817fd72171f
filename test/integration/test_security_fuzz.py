"""Fuzzing in `make test` (issue 15): hypothesis-generated CRI requests against every RPC and hostile requests
against every Docker API route, with a fixed seed and a bounded count.  The long run is `hack/fuzz`.

Pass criteria: no gRPC UNKNOWN/INTERNAL, no HTTP 500, no hang, narwhald alive, nothing left behind."""
from __future__ import annotations

import json
import os
from collections.abc import Iterator

import grpc
import pytest
from cri_api.v1 import api_pb2
from lib import fuzz_cri, fuzz_docker
from lib.docker import DockerDaemon, docker_daemon
from lib.leaks import leftovers
from lib.registry import Registry

EXAMPLES = int(os.environ.get("NARWHAL_FUZZ_EXAMPLES", "6"))


@pytest.fixture(scope="module")
def dd(registry: Registry) -> Iterator[DockerDaemon]:
    yield from docker_daemon(registry)


def _report(name: str, data: dict[str, object]) -> None:
    path = os.environ.get("NARWHAL_FUZZ_REPORT")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"suite": name, **data}) + "\n")
    print(name, json.dumps(data))


def _clean_cri(dd: DockerDaemon) -> None:
    rt = dd.daemon.runtime()
    for c in rt.ListContainers(api_pb2.ListContainersRequest()).containers:
        rt.RemoveContainer(api_pb2.RemoveContainerRequest(container_id=c.id))
    for s in rt.ListPodSandbox(api_pb2.ListPodSandboxRequest()).items:
        rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=s.id))
        rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=s.id))


def test_cri_fuzz_every_rpc(dd: DockerDaemon) -> None:
    tally = fuzz_cri.Tally()
    channel = grpc.insecure_channel(f"unix://{dd.daemon.cri_socket}")
    try:
        for service, method, input_type in fuzz_cri.rpcs():
            fuzz_cri.fuzz_rpc(channel, service, method, input_type, tally, examples=EXAMPLES)
            assert dd.daemon.proc is not None and dd.daemon.proc.poll() is None, f"narwhald died during {method}"
    finally:
        channel.close()
        _clean_cri(dd)
    _report("cri", {"requests": tally.requests, "codes": dict(tally.codes), "failures": len(tally.failures)})
    assert tally.failures == [], "\n".join(tally.failures)
    assert tally.requests >= EXAMPLES * 20


def test_docker_fuzz_every_route(dd: DockerDaemon) -> None:
    dd.out("run", "-d", "--name", "fz-target", "--stop-timeout", "1", "busybox", "sleep", "3600")
    dd.out("volume", "create", "fz-vol")
    dd.out("network", "create", "fz-net")
    targets = {"containers": ["fz-target", "nosuch"], "images": ["busybox"], "volumes": ["fz-vol"],
               "networks": ["fz-net", "bridge"], "exec": ["nosuch"]}
    tally = fuzz_docker.Tally()
    try:
        only = os.environ.get("NARWHAL_FUZZ_ROUTES", "")  # a substring: fuzz only the routes that contain it
        for method, route in fuzz_docker.docker_routes():
            if only not in route:
                continue
            fuzz_docker.fuzz_route(dd.daemon.docker_socket, method, route, targets, tally, examples=EXAMPLES,
                                   timeout=20)
            assert dd.daemon.proc is not None and dd.daemon.proc.poll() is None, f"narwhald died during {route}"
    finally:
        print("slowest routes:", tally.seconds.most_common(8))
    assert dd.docker("version").returncode == 0
    _report("docker", {"requests": tally.requests, "statuses": dict(tally.statuses),
                       "allowed_5xx": dict(tally.allowed_5xx), "failures": len(tally.failures)})
    assert tally.failures == [], "\n".join(tally.failures)


def test_nothing_left_behind(dd: DockerDaemon) -> None:
    dd.docker("swarm", "leave", "--force", check=False)  # the fuzzer may have made this node a swarm manager
    dd.rm_all()
    dd.docker("volume", "prune", "-f", "--all", check=False)
    dd.docker("network", "prune", "-f", check=False)
    _clean_cri(dd)
    left = leftovers(dd.daemon)
    assert left == {}, left
