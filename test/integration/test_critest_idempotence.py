"""critest "Idempotence" (cri-tools pkg/validate/idempotence.go), ported: stop/remove of what is gone or stopped."""
from __future__ import annotations

import uuid

from cri_api.v1 import api_pb2
from lib.critest import PAUSE_CMD, Crit, crit_daemon_fixture, crit_fixture  # noqa: F401


def test_stoppodsandbox_should_not_return_an_error_if_not_found(crit: Crit) -> None:
    """critest: Idempotence StopPodSandbox should not return an error if not found."""
    crit.rs.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=str(uuid.uuid4())), timeout=30)


def test_stoppodsandbox_should_not_return_an_error_if_already_stopped(crit: Crit) -> None:
    """critest: Idempotence StopPodSandbox should not return an error if already stopped."""
    pod_id = crit.run_pod(crit.pod_config("idempotence-pod"))
    for _ in range(2):
        crit.rs.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=60)
        status = crit.rs.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pod_id), timeout=30)
        assert status.status.state == api_pb2.SANDBOX_NOTREADY
    crit.rs.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod_id), timeout=60)
    crit.pods.remove(pod_id)


def test_removepodsandbox_should_not_return_an_error_if_not_found(crit: Crit) -> None:
    """critest: Idempotence RemovePodSandbox should not return an error if not found."""
    crit.rs.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=str(uuid.uuid4())), timeout=30)


def test_stopcontainer_should_not_return_an_error_if_not_found(crit: Crit) -> None:
    """critest: Idempotence StopContainer should not return an error if not found."""
    crit.rs.StopContainer(api_pb2.StopContainerRequest(container_id=str(uuid.uuid4()), timeout=0), timeout=30)


def test_stopcontainer_should_not_return_an_error_if_already_stopped(crit: Crit) -> None:
    """critest: Idempotence StopContainer should not return an error if already stopped (the spec stops once,
    then removes twice)."""
    pod_id, pod_config = crit.pod_for_container()
    cid = crit.create(pod_id, pod_config, crit.container_config("idempotence-container-", PAUSE_CMD))
    crit.start(cid)
    crit.rs.StopContainer(api_pb2.StopContainerRequest(container_id=cid, timeout=60), timeout=60)
    crit.wait_state(cid, api_pb2.CONTAINER_EXITED)
    for _ in range(2):
        crit.rs.RemoveContainer(api_pb2.RemoveContainerRequest(container_id=cid), timeout=60)


def test_removecontainer_should_not_return_an_error_if_not_found(crit: Crit) -> None:
    """critest: Idempotence RemoveContainer should not return an error if not found."""
    crit.rs.RemoveContainer(api_pb2.RemoveContainerRequest(container_id=str(uuid.uuid4())), timeout=30)


def test_removeimage_should_not_return_an_error_if_not_found(crit: Crit) -> None:
    """critest: Idempotence RemoveImage should not return an error if not found (twice)."""
    for _ in range(2):
        crit.daemon.images().RemoveImage(api_pb2.RemoveImageRequest(image=api_pb2.ImageSpec(image="0" * 64)),
                                         timeout=30)
