"""critest "Networking" (cri-tools pkg/validate/networking.go), ported.

critest's web server is nginx from registry.k8s.io; here busybox's ``httpd``
serves an index page on the same port 80 (the specs only need an HTTP 200).
"""
from __future__ import annotations

from cri_api.v1 import api_pb2
from lib.critest import (  # noqa: F401
    HOST_PORT_FOR_PORT_MAPPING,
    WEB_SERVER_PORT,
    Crit,
    check_main_page,
    crit_daemon_fixture,
    crit_fixture,
    web_server,
)


def port_mapping_pod(crit: Crit, mappings: list[api_pb2.PortMapping], host_net: bool = False
                     ) -> tuple[str, api_pb2.PodSandboxConfig]:
    """createPodSandboxWithPortMapping."""
    config = crit.pod_config("create-PodSandbox-with-port-mapping", port_mappings=mappings)
    if host_net:
        config.linux.security_context.namespace_options.network = api_pb2.NODE
    return crit.run_pod(config), config


def test_runtime_should_support_dns_config(crit: Crit) -> None:
    """critest: runtime should support DNS config [Conformance]."""
    config = crit.pod_config("create-PodSandbox-with-DNS-config", dns_config=api_pb2.DNSConfig(
        servers=["10.10.10.10"], searches=["google.com"], options=["ndots:8"]))
    pod_id = crit.run_pod(config)
    cid = crit.create_default(pod_id, config, "container-for-DNS-config-test-")
    crit.start(cid)
    out = crit.exec_ok(cid, ["cat", "/etc/resolv.conf"])
    for line in ("nameserver 10.10.10.10", "search google.com", "options ndots:8"):
        assert line in out, out


def test_runtime_should_support_set_hostname(crit: Crit) -> None:
    """critest: runtime should support set hostname [Conformance]."""
    config = crit.pod_config("create-PodSandbox-with-hostname", hostname="test-hostname")
    pod_id = crit.run_pod(config)
    cid = crit.create_default(pod_id, config, "container-for-hostname-test-")
    crit.start(cid)
    assert crit.exec_ok(cid, ["hostname"]).strip().lower() == "test-hostname"


def test_runtime_should_support_port_mapping_with_only_container_port(crit: Crit) -> None:
    """critest: runtime should support port mapping with only container port [Conformance]."""
    pod_id, config = port_mapping_pod(crit, [api_pb2.PortMapping(container_port=WEB_SERVER_PORT)])
    crit.start(web_server(crit, pod_id, config, "container-for-container-port"))
    check_main_page(crit, pod_id, 0, WEB_SERVER_PORT)


def test_runtime_should_support_port_mapping_with_host_port_and_container_port(crit: Crit) -> None:
    """critest: runtime should support port mapping with host port and container port [Conformance]."""
    pod_id, config = port_mapping_pod(crit, [api_pb2.PortMapping(container_port=WEB_SERVER_PORT,
                                                                 host_port=HOST_PORT_FOR_PORT_MAPPING)])
    crit.start(web_server(crit, pod_id, config, "container-for-host-port"))
    check_main_page(crit, "", HOST_PORT_FOR_PORT_MAPPING, 0)
