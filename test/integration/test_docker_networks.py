"""Docker networks through the real docker CLI: create/ls/inspect/rm/prune with Docker's errors and shapes;
with containers: DNS by name and alias, connect/disconnect, isolation between networks, internal networks,
and no leaks after removal.

One narwhald for the module (docker.io mirrored by the session registry, busybox pulled once); every test
removes the networks and containers it made.
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
from lib.docker import docker_daemon, eventually
from lib.docker_networks import bridge_ports, chain_exists, isolation_chain, link_exists, tagged_rules
from lib.leaks import leftovers
from lib.registry import Registry

DOCKER = "/usr/local/bin/docker"


@pytest.fixture(scope="module")
def dockerd(registry: Registry) -> Iterator[DaemonProcess]:
    for dd in docker_daemon(registry):
        yield dd.daemon


def docker(d: DaemonProcess, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([DOCKER, *args], env=d.docker_env(), capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def out(d: DaemonProcess, *args: str) -> str:
    return docker(d, *args).stdout.strip()


def inspect(d: DaemonProcess, ref: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(out(d, "inspect", "--type", "container", ref))[0]
    return found


def inspect_network(d: DaemonProcess, ref: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(out(d, "network", "inspect", ref))[0]
    return found




def run_rm(d: DaemonProcess, network: str, *cmd: str) -> subprocess.CompletedProcess[str]:
    return docker(d, "run", "--rm", "--network", network, "busybox", *cmd, check=False)


def names(d: DaemonProcess, *args: str) -> list[str]:
    return docker(d, "network", "ls", "--format", "{{.Name}}", *args).stdout.split()


def test_predefined_networks(dockerd: DaemonProcess) -> None:
    listed = docker(dockerd, "network", "ls", "--format", "{{.ID}} {{.Name}} {{.Driver}} {{.Scope}}").stdout
    rows = {line.split()[1]: line.split() for line in listed.splitlines()}
    assert {k: (v[2], v[3]) for k, v in rows.items()} == {
        "bridge": ("bridge", "local"), "host": ("host", "local"), "none": ("null", "local")}
    bridge = inspect_network(dockerd, "bridge")
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
        info = inspect_network(dockerd, "mynet")
        assert info["Id"] == net_id and info["Driver"] == "bridge" and info["Scope"] == "local"
        assert info["IPAM"]["Config"] == [{"Subnet": "10.200.5.0/24", "Gateway": "10.200.5.1"}]
        assert info["Internal"] is False and info["Labels"] == {"team": "a"} and info["Containers"] == {}
        inner = inspect_network(dockerd, auto_id[:12])
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
        bridge = inspect_network(dockerd, "one")["Id"][:12]
        assert link_exists(f"nwb{bridge}")
        gateway = inspect_network(dockerd, "one")["IPAM"]["Config"][0]["Gateway"]
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
        before = {n: inspect_network(dockerd, n)["Id"] for n in ("bridge", "host", "none", "kept")}
        dockerd.stop()
        dockerd.start()
        assert {n: inspect_network(dockerd, n)["Id"] for n in before} == before
        assert inspect_network(dockerd, "kept")["Id"] == keep
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
    beta_ip = next(w.split("/")[0] for w in addrs.split() if w.startswith("10.200.5."))
    assert beta_ip in out(dockerd, "exec", "beta", "cat", "/etc/hosts")
    assert sorted(inspect_network(dockerd, mynet)["Containers"]) == sorted([web_id, out(dockerd, "inspect", "-f",
                                                                                         "{{.Id}}", "beta")])
    again = docker(dockerd, "network", "connect", mynet, "beta", check=False)
    assert again.returncode != 0 and "already exists in network mynet" in again.stderr
    busy = docker(dockerd, "network", "rm", mynet, check=False)
    assert busy.returncode != 0 and "has active endpoints" in busy.stderr

    docker(dockerd, "network", "disconnect", mynet, "beta")
    assert "10.200.5." not in out(dockerd, "exec", "beta", "ip", "-o", "-4", "addr")
    assert beta_ip not in out(dockerd, "exec", "beta", "cat", "/etc/hosts")
    gone = docker(dockerd, "network", "disconnect", mynet, "beta", check=False)
    assert gone.returncode != 0 and "is not connected" in gone.stderr
    forced = docker(dockerd, "network", "disconnect", "--force", mynet, "beta", check=False)
    assert forced.returncode != 0 and "is not connected" in forced.stderr  # moby: force excuses only what is gone
    missing = docker(dockerd, "network", "connect", mynet, "nosuch", check=False)
    assert missing.returncode != 0 and "No such container: nosuch" in missing.stderr


def test_networks_are_isolated_and_internal_has_no_way_out(dockerd: DaemonProcess, mynet: str) -> None:
    docker(dockerd, "network", "create", "othernet")
    docker(dockerd, "network", "create", "--internal", "innernet")
    try:
        for name, network in (("srv1", mynet), ("srv2", "othernet"), ("srv3", "innernet")):
            out(dockerd, "run", "-d", "--name", name, "--network", network, "busybox", *WEB)
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


def _get(port: int, path: str = "/hostname") -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
        body: bytes = resp.read()
        return body.decode().strip()


def _answers(port: int) -> str:
    try:
        return _get(port)
    except OSError:
        return ""


def _host_port(d: DaemonProcess, ctr: str) -> int:
    return int(out(d, "port", ctr, "80/tcp").splitlines()[0].rsplit(":", 1)[1])


def test_published_ports_answer_on_user_networks(dockerd: DaemonProcess, mynet: str) -> None:
    """Ports answer over HTTP from a user-defined network: run with -p; a container on two networks; and a
    created container disconnected from its network and connected again before start (docker-compose 1.29
    does this to every service container)."""
    docker(dockerd, "network", "create", "second")
    try:
        one = out(dockerd, "run", "-d", "--name", "p1", "--network", mynet, "-p", "127.0.0.1::80", "busybox", *WEB)
        two = out(dockerd, "create", "--name", "p2", "--network", mynet, "-p", "127.0.0.1::80", "busybox", *WEB)
        docker(dockerd, "network", "connect", "second", "p2")
        docker(dockerd, "start", "p2")
        three = out(dockerd, "create", "--name", "p3", "--network", mynet, "-p", "127.0.0.1::80", "busybox", *WEB)
        docker(dockerd, "network", "disconnect", mynet, "p3")
        docker(dockerd, "network", "connect", "--alias", "web", mynet, "p3")
        docker(dockerd, "network", "connect", "second", "p3")
        docker(dockerd, "start", "p3")
        for name, cid in (("p1", one), ("p2", two), ("p3", three)):
            port = _host_port(dockerd, name)
            assert eventually(lambda p=port, c=cid: _answers(p) == c[:12]), name  # httpd may still be starting
        assert sorted(inspect_network(dockerd, "second")["Containers"]) == sorted([two, three])
    finally:
        docker(dockerd, "rm", "-f", "p1", "p2", "p3", check=False)
        docker(dockerd, "network", "rm", "second", check=False)


def test_legacy_links(dockerd: DaemonProcess, mynet: str) -> None:
    """--link on the default bridge: hosts entries, moby's variables, inspect's Links, ps's link names, a start
    refused while the linked container is stopped, link removal; on a user network: a DNS name for the
    linking container only, shown as the endpoint's Links."""
    try:
        db = out(dockerd, "run", "-d", "--name", "ldb", "-e", "SECRET=s3", "--expose", "5432", "busybox", *WEB)
        # Read through logs after wait: an attached run's output can still be lost (issue 13, fixed apart).
        docker(dockerd, "run", "-d", "--name", "lme", "--link", "ldb:data", "busybox", "sh", "-c",
               "env; cat /etc/hosts; wget -q -O - http://data/hostname")
        assert out(dockerd, "wait", "lme") == "0"
        ip = inspect_network(dockerd, "bridge")["Containers"][db]["IPv4Address"].split("/")[0]
        lines = out(dockerd, "logs", "lme").splitlines()
        assert {f"DATA_PORT=tcp://{ip}:5432", f"DATA_PORT_5432_TCP=tcp://{ip}:5432", f"DATA_PORT_5432_TCP_ADDR={ip}",
                "DATA_NAME=/lme/data", "DATA_ENV_SECRET=s3"} <= set(lines)
        assert f"{ip}\tdata {db[:12]} ldb" in lines and lines[-1] == db[:12]
        me = inspect(dockerd, "lme")
        assert me["HostConfig"]["Links"] == ["/ldb:/lme/data"]
        assert not any(e.startswith("DATA_") for e in me["Config"]["Env"])  # not in Config.Env, as moby
        names = docker(dockerd, "ps", "-a", "--no-trunc", "--filter", f"id={db}", "--format", "{{.Names}}").stdout
        assert set(names.strip().split(",")) == {"ldb", "lme/data"}
        docker(dockerd, "stop", "ldb")
        refused = docker(dockerd, "start", "lme", check=False)
        assert "Cannot link to a non running container: /ldb AS /lme/data" in refused.stderr
        docker(dockerd, "rm", "--link", "lme/data")
        assert inspect(dockerd, "lme")["HostConfig"]["Links"] is None
        assert out(dockerd, "ps", "-aq", "--no-trunc", "--filter", f"id={db}") == db  # both containers stay
        for args, message in ((["--link", "nothere:x"], "could not get container for nothere: No such container"),
                              (["--network", "host", "--link", "ldb"], "host type networking can't be used with "
                                                                       "links"),
                              (["--link", "a:b:c"], "bad format for links: a:b:c")):
            bad = docker(dockerd, "create", *args, "busybox", check=False)
            assert bad.returncode != 0 and message in bad.stderr, bad.stderr

        # A user network: the alias is a name in the linking container's DNS only.
        udb = out(dockerd, "run", "-d", "--name", "udb", "--network", mynet, "busybox", *WEB)
        out(dockerd, "run", "-d", "--name", "ume", "--network", mynet, "--link", "udb:store", "busybox", "sleep", "300")
        assert out(dockerd, "exec", "ume", "wget", "-q", "-O", "-", "http://store/hostname") == udb[:12]
        assert out(dockerd, "exec", "ume", "sh", "-c", "env | grep -c ^STORE_ || true") == "0"
        other = docker(dockerd, "run", "--rm", "--network", mynet, "busybox", "nslookup", "store", check=False)
        assert other.returncode != 0
        ume = inspect(dockerd, "ume")
        assert ume["NetworkSettings"]["Networks"][mynet]["Links"] == ["udb:store"]
        assert ume["HostConfig"]["Links"] is None

        # Both kinds of link survive a daemon restart.
        docker(dockerd, "start", "ldb")
        out(dockerd, "create", "--name", "lme2", "--link", "ldb:again", "busybox", "true")
        dockerd.stop()
        dockerd.start()
        assert inspect(dockerd, "lme2")["HostConfig"]["Links"] == ["/ldb:/lme2/again"]
        assert inspect(dockerd, "ume")["NetworkSettings"]["Networks"][mynet]["Links"] == ["udb:store"]
        # (the embedded DNS servers come back while the daemon recovers: wait for ume's)
        assert eventually(lambda: docker(dockerd, "exec", "ume", "wget", "-q", "-O", "-", "http://store/hostname",
                                         check=False).stdout.strip() == udb[:12])
        # A linked container that is removed takes the link along: the linking one starts again.
        docker(dockerd, "rm", "-f", "ldb")
        assert inspect(dockerd, "lme2")["HostConfig"]["Links"] is None
        docker(dockerd, "start", "lme2")
    finally:
        docker(dockerd, "rm", "-f", "lme", "lme2", "ldb", "ume", "udb", check=False)


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
    assert [c["Name"] for c in inspect_network(dockerd, "host")["Containers"].values()] == ["shared-host"]
    assert [c["Name"] for c in inspect_network(dockerd, "none")["Containers"].values()] == ["shared-none"]
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


def test_teardown_of_a_daemon_with_networks_leaves_nothing() -> None:
    """Networks outlive narwhald (as Docker's outlive dockerd); the tests' teardown helper
    (lib.cni_host.InstanceNetwork) removes their bridges and the isolation chain with the daemon."""
    d = start_daemon()
    try:
        net_id = out(d, "network", "create", "orphan")
        assert link_exists(f"nwb{net_id[:12]}") and chain_exists(isolation_chain(d.root))
    finally:
        network = InstanceNetwork.of(d.root, d.base / "net.d")
        chain = isolation_chain(d.root)
        d.destroy()
        network.remove()
    assert not link_exists(f"nwb{net_id[:12]}") and not chain_exists(chain)
