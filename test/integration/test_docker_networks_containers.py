"""Docker networks with containers, through the real docker CLI: user-defined bridges with DNS by name and
alias, connect/disconnect, isolation between networks, internal networks, and no leaks after removal.

One narwhald for the module (docker.io mirrored by the session registry, busybox pulled once).
"""
from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from lib.cni_host import InstanceNetwork
from lib.daemon import DaemonProcess, start_daemon
from lib.docker_networks import NetworkHostState, bridge_ports, chain_exists, isolation_chain, link_exists, tagged_rules
from lib.images import push
from lib.leaks import leftovers
from lib.registry import Registry

DOCKER = "/usr/local/bin/docker"


@pytest.fixture(scope="module")
def dockerd(registry: Registry) -> Iterator[DaemonProcess]:
    push(registry.host, "library/busybox")
    d = start_daemon(f'registry:\n  mirrors:\n    docker.io: ["http://{registry.host}"]\n')
    try:
        docker(d, "pull", "busybox")
        yield d
    finally:
        host = NetworkHostState.of(d.root)
        network = InstanceNetwork.of(d.root, d.base / "net.d")
        d.destroy()
        network.remove()
        host.remove()


def docker(d: DaemonProcess, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([DOCKER, *args], env=d.docker_env(), capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def out(d: DaemonProcess, *args: str) -> str:
    return docker(d, *args).stdout.strip()


def inspect_network(d: DaemonProcess, ref: str) -> dict[str, Any]:
    return json.loads(out(d, "network", "inspect", ref))[0]  # type: ignore[no-any-return]


# The engine does not yet give containers created on a user-defined network the embedded server's
# resolv.conf (pkg.networks.resolv.embedded_dns_config); until it does, ask for it with --dns.
EMBEDDED_DNS = ("--dns", "127.0.0.11")


def run_rm(d: DaemonProcess, network: str, *cmd: str) -> subprocess.CompletedProcess[str]:
    return docker(d, "run", "--rm", "--network", network, *EMBEDDED_DNS, "busybox", *cmd, check=False)


WEB = ("httpd", "-f", "-p", "80", "-h", "/etc")  # serves the container's /etc: /hostname names it


@pytest.fixture
def mynet(dockerd: DaemonProcess) -> Iterator[str]:
    docker(dockerd, "network", "create", "--subnet", "10.200.5.0/24", "mynet")
    yield "mynet"
    docker(dockerd, "rm", "-f", *out(dockerd, "ps", "-aq").split(), check=False)
    docker(dockerd, "network", "rm", "mynet", check=False)


def test_names_aliases_connect_disconnect(dockerd: DaemonProcess, mynet: str) -> None:
    web_id = out(dockerd, "run", "-d", "--name", "alpha", "--network", mynet, "--network-alias", "web", "busybox",
                 *WEB)
    info = inspect_network(dockerd, mynet)
    assert list(info["Containers"]) == [web_id]
    endpoint = info["Containers"][web_id]
    assert endpoint["Name"] == "alpha" and endpoint["IPv4Address"].startswith("10.200.5.")
    assert len(endpoint["EndpointID"]) == 64 and endpoint["MacAddress"]
    alpha_ip = endpoint["IPv4Address"].split("/")[0]

    assert run_rm(dockerd, mynet, "wget", "-qO-", "http://alpha/hostname").stdout.strip() == web_id[:12]
    assert run_rm(dockerd, mynet, "wget", "-qO-", "http://web/hostname").stdout.strip() == web_id[:12]
    assert run_rm(dockerd, mynet, "wget", "-qO-", f"http://{web_id[:12]}/hostname").stdout.strip() == web_id[:12]
    looked_up = docker(dockerd, "run", "--rm", "--network", mynet, "busybox", "nslookup", "alpha", "127.0.0.11")
    assert alpha_ip in looked_up.stdout

    # A container on the default bridge has the host's resolvers and no names; connect gives it both.
    out(dockerd, "run", "-d", "--name", "beta", "busybox", "sleep", "300")
    assert "127.0.0.11" not in out(dockerd, "exec", "beta", "cat", "/etc/resolv.conf")
    assert docker(dockerd, "exec", "beta", "wget", "-T", "1", "-qO-", f"http://{alpha_ip}/hostname",
                  check=False).returncode != 0  # bridge -> mynet: isolated
    docker(dockerd, "network", "connect", "--alias", "b2", mynet, "beta")
    assert "nameserver 127.0.0.11" in out(dockerd, "exec", "beta", "cat", "/etc/resolv.conf")
    assert out(dockerd, "exec", "beta", "wget", "-qO-", "http://alpha/hostname") == web_id[:12]
    addrs = out(dockerd, "exec", "beta", "ip", "-o", "-4", "addr")
    assert " eth0 " in addrs and " eth1 " in addrs and "10.200.5." in addrs
    assert sorted(inspect_network(dockerd, mynet)["Containers"]) == sorted([web_id, out(dockerd, "inspect", "-f",
                                                                                         "{{.Id}}", "beta")])
    again = docker(dockerd, "network", "connect", mynet, "beta", check=False)
    assert again.returncode != 0 and "already exists in network mynet" in again.stderr
    busy = docker(dockerd, "network", "rm", mynet, check=False)
    assert busy.returncode != 0 and "has active endpoints" in busy.stderr

    docker(dockerd, "network", "disconnect", mynet, "beta")
    assert "10.200.5." not in out(dockerd, "exec", "beta", "ip", "-o", "-4", "addr")
    gone = docker(dockerd, "network", "disconnect", mynet, "beta", check=False)
    assert gone.returncode != 0 and "is not connected" in gone.stderr
    docker(dockerd, "network", "disconnect", "--force", mynet, "beta")
    missing = docker(dockerd, "network", "connect", mynet, "nosuch", check=False)
    assert missing.returncode != 0 and "No such container: nosuch" in missing.stderr


def test_networks_are_isolated_and_internal_has_no_way_out(dockerd: DaemonProcess, mynet: str) -> None:
    docker(dockerd, "network", "create", "othernet")
    docker(dockerd, "network", "create", "--internal", "innernet")
    try:
        for name, network in (("srv1", mynet), ("srv2", "othernet"), ("srv3", "innernet")):
            out(dockerd, "run", "-d", "--name", name, "--network", network, *EMBEDDED_DNS, "busybox", *WEB)
        ip1 = out(dockerd, "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", "srv1")
        assert ip1.startswith("10.200.5.")
        # Another network can neither resolve nor reach srv1.
        assert run_rm(dockerd, "othernet", "wget", "-T", "1", "-qO-", "http://srv1/hostname").returncode != 0
        assert run_rm(dockerd, "othernet", "wget", "-T", "1", "-qO-", f"http://{ip1}/hostname").returncode != 0
        assert run_rm(dockerd, "othernet", "wget", "-qO-", "http://srv2/hostname").returncode == 0
        # Internal: names work inside, nothing leaves (no default route, other networks unreachable).
        assert run_rm(dockerd, "innernet", "wget", "-qO-", "http://srv3/hostname").returncode == 0
        routes = run_rm(dockerd, "innernet", "ip", "route").stdout
        assert "default" not in routes
        assert run_rm(dockerd, "innernet", "wget", "-T", "1", "-qO-", f"http://{ip1}/hostname").returncode != 0
    finally:
        docker(dockerd, "rm", "-f", "srv1", "srv2", "srv3", check=False)
        docker(dockerd, "network", "rm", "othernet", "innernet", check=False)


def test_removal_leaves_nothing(dockerd: DaemonProcess) -> None:
    net_id = out(dockerd, "network", "create", "leaky")
    cni_name = f"narwhal-{isolation_chain(dockerd.root).removeprefix('NW-ISO-')}-{net_id[:12]}"
    bridge = f"nwb{net_id[:12]}"
    cid = out(dockerd, "run", "-d", "--name", "l1", "--network", "leaky", "-p", "127.0.0.1::80", "busybox", *WEB)
    assert link_exists(bridge) and bridge_ports(bridge)
    # Ports are published from a user-defined network too.
    port = out(dockerd, "port", "l1", "80").split(":")[-1]
    assert urllib.request.urlopen(f"http://127.0.0.1:{port}/hostname", timeout=10).read().decode().strip() == \
        cid[:12]
    docker(dockerd, "rm", "-f", "l1")
    docker(dockerd, "network", "rm", "leaky")
    assert not link_exists(bridge) and tagged_rules(cni_name) == []
    assert not chain_exists(isolation_chain(dockerd.root))
    assert not (dockerd.state / "cni" / "ipam" / cni_name).exists()
    left = leftovers(dockerd)
    left.pop("cgroups", None)  # the CRI side's empty parents are not ours to judge here
    assert left == {}
    assert "leaky" not in out(dockerd, "network", "ls")


def test_connect_created_stopped_and_shared_containers(dockerd: DaemonProcess, mynet: str) -> None:
    """A container's sandbox holds its network namespace from create to rm: created and stopped containers
    are connected (and disconnected) too, and keep their networks across stop/start, as Docker's do."""
    out(dockerd, "create", "--name", "early", "busybox", "sleep", "300")
    docker(dockerd, "network", "connect", "--ip", "10.200.5.50", mynet, "early")
    docker(dockerd, "start", "early")
    assert "10.200.5.50/24" in out(dockerd, "exec", "early", "ip", "-o", "-4", "addr")
    docker(dockerd, "stop", "-t", "0", "early")
    docker(dockerd, "network", "disconnect", mynet, "early")
    docker(dockerd, "network", "connect", "--alias", "late", mynet, "early")
    docker(dockerd, "start", "early")
    assert "10.200.5." in out(dockerd, "exec", "early", "ip", "-o", "-4", "addr")
    # Containers sharing another's namespace (or the host's) join no network of their own.
    for mode in ("host", "container:early", "none"):
        out(dockerd, "run", "-d", "--name", f"shared-{mode.split(':')[0]}", "--network", mode, "busybox", "sleep",
            "300")
        refused = docker(dockerd, "network", "connect", mynet, f"shared-{mode.split(':')[0]}", check=False)
        assert refused.returncode != 0 and "cannot be connected" in refused.stderr, mode
    bad = docker(dockerd, "network", "connect", "--alias", "x", "bridge", "early", check=False)
    assert bad.returncode != 0 and "network-scoped alias is supported only" in bad.stderr


def test_run_errors_and_default_bridge_inspect(dockerd: DaemonProcess, mynet: str) -> None:
    missing = docker(dockerd, "run", "--rm", "--network", "nosuch", "busybox", "true", check=False)
    assert missing.returncode != 0 and "network nosuch not found" in missing.stderr
    outside = docker(dockerd, "run", "--rm", "--network", mynet, "--ip", "10.200.6.5", "busybox", "true",
                     check=False)
    assert outside.returncode != 0 and "no configured subnet or ip-range contain the IP address" in outside.stderr
    fixed = out(dockerd, "run", "--rm", "--network", mynet, "--ip", "10.200.5.99", "busybox", "ip", "-o", "-4",
                "addr", "show", "eth0")
    assert "10.200.5.99/24" in fixed
    on_bridge = out(dockerd, "run", "-d", "--name", "plain", "busybox", "sleep", "300")
    containers = inspect_network(dockerd, "bridge")["Containers"]
    assert containers[on_bridge]["Name"] == "plain" and containers[on_bridge]["IPv4Address"].startswith("10.123.")
    assert inspect_network(dockerd, mynet)["Containers"] == {}
