"""Docker networks through the real docker CLI: create/ls/inspect/rm/prune, Docker's errors and shapes.

One narwhald for the module; every test removes the networks it made.
"""
from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from lib.cni_host import InstanceNetwork
from lib.daemon import DaemonProcess, start_daemon
from lib.docker_networks import NetworkHostState, chain_exists, isolation_chain, link_exists

DOCKER = "/usr/local/bin/docker"


@pytest.fixture(scope="module")
def dockerd() -> Iterator[DaemonProcess]:
    d = start_daemon()
    try:
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
        raise AssertionError(f"docker {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return proc


def inspect(d: DaemonProcess, ref: str) -> dict[str, Any]:
    data = json.loads(docker(d, "network", "inspect", ref).stdout)
    assert isinstance(data, list) and len(data) == 1
    return data[0]  # type: ignore[no-any-return]


def names(d: DaemonProcess, *args: str) -> list[str]:
    return docker(d, "network", "ls", "--format", "{{.Name}}", *args).stdout.split()


def test_predefined_networks(dockerd: DaemonProcess) -> None:
    listed = docker(dockerd, "network", "ls", "--format", "{{.ID}} {{.Name}} {{.Driver}} {{.Scope}}").stdout
    rows = {line.split()[1]: line.split() for line in listed.splitlines()}
    assert {k: (v[2], v[3]) for k, v in rows.items()} == {
        "bridge": ("bridge", "local"), "host": ("host", "local"), "none": ("null", "local")}
    bridge = inspect(dockerd, "bridge")
    assert bridge["Id"].startswith(rows["bridge"][0]) and len(bridge["Id"]) == 64
    assert bridge["IPAM"]["Config"] and bridge["IPAM"]["Config"][0]["Subnet"].startswith("10.123.")
    assert bridge["Options"]["com.docker.network.bridge.default_bridge"] == "true"
    for name in ("bridge", "host", "none"):
        proc = docker(dockerd, "network", "rm", name, check=False)
        assert proc.returncode != 0 and f"{name} is a pre-defined network and cannot be removed" in proc.stderr
    assert names(dockerd, "--filter", "type=builtin") == ["bridge", "host", "none"]
    assert names(dockerd, "--filter", "type=custom") == []


def test_create_inspect_filter_remove(dockerd: DaemonProcess) -> None:
    net_id = docker(dockerd, "network", "create", "--subnet", "10.200.5.0/24", "--label", "team=a", "mynet").stdout
    net_id = net_id.strip()
    auto_id = docker(dockerd, "network", "create", "--internal", "--label", "team=b", "--ip-range", "10.200.6.128/25",
                     "--subnet", "10.200.6.0/24", "--gateway", "10.200.6.254", "inner").stdout.strip()
    try:
        info = inspect(dockerd, "mynet")
        assert info["Id"] == net_id and info["Driver"] == "bridge" and info["Scope"] == "local"
        assert info["IPAM"]["Config"] == [{"Subnet": "10.200.5.0/24", "Gateway": "10.200.5.1"}]
        assert info["Internal"] is False and info["Labels"] == {"team": "a"} and info["Containers"] == {}
        inner = inspect(dockerd, auto_id[:12])
        assert inner["Name"] == "inner" and inner["Internal"] is True
        assert inner["IPAM"]["Config"] == [{"Subnet": "10.200.6.0/24", "Gateway": "10.200.6.254",
                                             "IPRange": "10.200.6.128/25"}]
        assert names(dockerd, "--filter", "type=custom") == ["inner", "mynet"]
        assert names(dockerd, "--filter", "label=team=a") == ["mynet"]
        assert names(dockerd, "--filter", "name=inn") == ["inner"]
        assert names(dockerd, "--filter", f"id={net_id[:10]}") == ["mynet"]
        assert names(dockerd, "--filter", "driver=null") == ["none"]
        assert names(dockerd, "--filter", "dangling=true") == ["inner", "mynet"]
        # Docker's errors
        dup = docker(dockerd, "network", "create", "mynet", check=False)
        assert dup.returncode != 0 and "network with name mynet already exists" in dup.stderr
        overlap = docker(dockerd, "network", "create", "--subnet", "10.200.5.128/25", "other", check=False)
        assert overlap.returncode != 0 and "Pool overlaps" in overlap.stderr
        bad = docker(dockerd, "network", "create", "-d", "macvlan", "mv", check=False)
        assert bad.returncode != 0 and "not supported" in bad.stderr
        missing = docker(dockerd, "network", "inspect", "nosuch", check=False)
        assert missing.returncode != 0 and "network nosuch not found" in missing.stderr
    finally:
        docker(dockerd, "network", "rm", "mynet", "inner")
    assert names(dockerd, "--filter", "type=custom") == []


def test_network_host_state_follows_the_network(dockerd: DaemonProcess) -> None:
    """Each network has its own bridge, up with its gateway address from create on (its route tells other
    instances the subnet is taken) and removed with the network, and its isolation rules; after the last
    network goes, no chain is left."""
    docker(dockerd, "network", "create", "one")
    try:
        bridge = inspect(dockerd, "one")["Id"][:12]
        assert link_exists(f"nwb{bridge}")
        gateway = inspect(dockerd, "one")["IPAM"]["Config"][0]["Gateway"]
        assert f"inet {gateway}/" in subprocess.run(["ip", "-4", "addr", "show", f"nwb{bridge}"], capture_output=True,
                                                    text=True).stdout
        chain = isolation_chain(dockerd.root)
        assert chain_exists(chain)
        rules = subprocess.run(["iptables", "-w", "-S", chain], capture_output=True, text=True).stdout
        assert f"nwb{bridge}" in rules
    finally:
        docker(dockerd, "network", "rm", "one")
    assert not chain_exists(isolation_chain(dockerd.root)) and not link_exists(f"nwb{bridge}")
    assert not list((dockerd.root / "docker" / "networks").glob("*")) or all(
        json.loads(p.read_text())["name"] in ("bridge", "host", "none")
        for p in (dockerd.root / "docker" / "networks").glob("*.json"))


def test_prune_and_restart(dockerd: DaemonProcess) -> None:
    keep = docker(dockerd, "network", "create", "--label", "keep=1", "kept").stdout.strip()
    docker(dockerd, "network", "create", "gone")
    try:
        young = docker(dockerd, "network", "prune", "-f", "--filter", "until=1h").stdout
        assert "gone" not in young and "kept" not in young  # both made less than an hour ago
        out = docker(dockerd, "network", "prune", "-f", "--filter", "label!=keep=1").stdout
        assert "gone" in out and "kept" not in out
        assert names(dockerd, "--filter", "type=custom") == ["kept"]
        # Networks survive a restart with their IDs.
        before = {n: inspect(dockerd, n)["Id"] for n in ("bridge", "host", "none", "kept")}
        dockerd.stop()
        dockerd.start()
        assert {n: inspect(dockerd, n)["Id"] for n in before} == before
        assert inspect(dockerd, "kept")["Id"] == keep
    finally:
        docker(dockerd, "network", "rm", "kept")


def test_api_shapes(dockerd: DaemonProcess) -> None:
    """The raw Engine API: 201 + Id/Warning on create, 204 on delete, NetworksDeleted on prune, 404/409."""
    import http.client
    import socket
    from urllib.parse import quote

    class UnixHTTP(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.connect(str(dockerd.docker_socket))

    def call(method: str, path: str, body: Any = None) -> tuple[int, Any]:
        conn = UnixHTTP("localhost")
        conn.request(method, "/v1.44" + path, body=json.dumps(body) if body is not None else None,
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        raw = resp.read()
        conn.close()
        return resp.status, json.loads(raw) if raw else None

    status, body = call("POST", "/networks/create", {"Name": "api", "Driver": "bridge", "Labels": {"a": "b"},
                                                     "IPAM": {"Config": [{"Subnet": "10.200.9.0/24"}]}})
    assert status == 201 and len(body["Id"]) == 64 and body["Warning"] == ""
    assert call("POST", "/networks/create", {"Name": "api"})[0] == 409
    assert call("POST", "/networks/create", {"Name": 7})[0] == 400
    assert call("GET", "/networks/nosuch")[0] == 404
    status, listed = call("GET", "/networks?filters=" + quote(json.dumps({"label": ["a=b"]})))
    assert status == 200 and [n["Name"] for n in listed] == ["api"]
    assert call("GET", "/networks?filters=" + quote(json.dumps({"bogus": ["x"]})))[0] == 400
    assert call("DELETE", "/networks/api") == (204, None)
    assert call("DELETE", "/networks/api")[0] == 404
    assert call("POST", "/networks/prune") == (200, {"NetworksDeleted": []})
