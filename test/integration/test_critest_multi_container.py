"""critest "Multiple Containers [Conformance]" (cri-tools pkg/validate/multi_container_linux.go), ported.

critest's httpd image becomes busybox's ``httpd``, announcing itself on stdout
the way Apache's startup notice names "httpd" in its log.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cri_api.v1 import api_pb2
from lib import cri
from lib.critest import DEFAULT_LOG, Crit, check_main_page, crit_daemon_fixture, crit_fixture  # noqa: F401

HTTPD_PORT = 80
HTTPD = ["sh", "-c", "echo httpd starting; mkdir -p /www && echo critest > /www/index.html && "
                     "exec httpd -f -p 80 -h /www"]


@dataclass
class Pod:
    id: str
    httpd: str
    busybox: str


@pytest.fixture
def pod(crit: Crit) -> Iterator[Pod]:
    """BeforeEach: a pod with a log directory and container port 80, an httpd and a busybox container."""
    config = crit.pod_config("PodSandbox-for-multi-container-test",
                             port_mappings=[api_pb2.PortMapping(container_port=HTTPD_PORT)])
    log_dir = crit.tempdir("podLogTest") / config.metadata.name
    log_dir.mkdir()
    config.log_directory = str(log_dir)
    pod_id = crit.run_pod(config)
    ids = []
    for prefix, command in (("httpd", HTTPD), ("busybox", ["sh", "-c", f"echo {DEFAULT_LOG}; sleep 1000"])):
        container = crit.container_config(prefix, command)
        container.log_path = container.metadata.name + ".log"
        cid = crit.create(pod_id, config, container)
        crit.start_running(cid)
        ids.append(cid)
    yield Pod(pod_id, *ids)
    crit.remove_pod(pod_id)  # AfterEach: both must succeed


def test_should_support_network(crit: Crit, pod: Pod) -> None:
    """critest: Multiple Containers - should support network."""
    check_main_page(crit, pod.id, 0, HTTPD_PORT)


def test_should_support_container_log(crit: Crit, pod: Pod) -> None:
    """critest: Multiple Containers - should support container log (each container's status names its log)."""
    for cid, expected in ((pod.httpd, "httpd"), (pod.busybox, DEFAULT_LOG)):
        log_path = Path(crit.status(cid).status.log_path)
        cri.wait_for(lambda p=log_path, e=expected: p.exists() and e in p.read_text(), timeout=60,
                     what=f"{expected!r} in {log_path}")


def test_should_support_container_exec(crit: Crit, pod: Pod) -> None:
    """critest: Multiple Containers - should support container exec."""
    assert crit.exec_ok(pod.httpd, ["echo", "httpd"]) == "httpd\n"
    assert crit.exec_ok(pod.busybox, ["echo", "busybox"]) == "busybox\n"
