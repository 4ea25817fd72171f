"""Issue 17's docker CLI acceptance list in one walk, each command's output checked against the shape
Docker's gives: swarm init, service create -p/ls/ps/inspect/logs/scale/update --image/--env-add/
rollback, node ls/inspect/update --availability drain, secret create/ls/rm, config create, swarm
leave --force; nothing may be left behind.
"""
from __future__ import annotations

import json
import re
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from lib import cni_host
from lib.daemon import free_port
from lib.docker import DockerDaemon, docker_daemon, eventually
from lib.images import push
from lib.leaks import leftovers
from lib.registry import Registry


@pytest.fixture(scope="module")
def dd(registry: Registry) -> Iterator[DockerDaemon]:
    push(registry.host, "library/busybox", "v2")  # the image `service update --image` moves to
    yield from docker_daemon(registry)


def columns(line: str) -> list[str]:
    """A table row of the CLI: columns are separated by two or more spaces."""
    return re.split(r"\s{2,}", line.strip())


def flat(text: str) -> str:
    """--pretty output with its runs of tabs and spaces made one space (the CLI aligns with both)."""
    return re.sub(r"[ \t]+", " ", text)


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5):  # noqa: S310 - loopback only
            return True
    except urllib.error.HTTPError:
        return True  # httpd answered (404: nothing to serve from /)
    except OSError:
        return False


def replicas(dd: DockerDaemon, name: str) -> str:
    return dd.out("service", "ls", "--filter", f"name={name}", "--format", "{{.Replicas}}")


def test_docker_cli_swarm_acceptance(dd: DockerDaemon) -> None:
    # its own address pool and data path port: the ingress overlay of published ports lives in the host's netns
    init = dd.out("swarm", "init", "--advertise-addr", "127.0.0.1", "--default-addr-pool", "10.215.0.0/16",
                  "--data-path-port", str(cni_host.free_port(socket.SOCK_DGRAM)))
    m = re.match(r"Swarm initialized: current node \(([a-z0-9]{25})\) is now a manager\.", init)
    assert m, init
    node_id = m.group(1)
    assert re.search(r"docker swarm join --token SWMTKN-1-[a-z0-9]{50}-[a-z0-9]{25} 127\.0\.0\.1:2377", init), init
    assert "To add a manager to this swarm, run 'docker swarm join-token manager'" in init
    try:
        _walk(dd, node_id)
    finally:
        left = dd.docker("swarm", "leave", "--force", check=False)
    assert left.stdout.strip() == "Node left the swarm."
    assert dd.out("ps", "-aq") == ""
    assert json.loads(dd.out("info", "--format", "{{json .Swarm}}"))["LocalNodeState"] == "inactive"
    assert leftovers(dd.daemon) == {}


def _walk(dd: DockerDaemon, node_id: str) -> None:
    port = free_port()
    created = dd.out("service", "create", "--replicas", "3", "--name", "web", "-p", f"{port}:80",
                     "--stop-grace-period", "1s", "busybox", "sh", "-c", "echo listening on 80; exec httpd -f -p 80")
    service_id = created.splitlines()[0]
    assert re.fullmatch(r"[a-z0-9]{25}", service_id)
    assert "overall progress: 3 out of 3 tasks" in created and "verify: Service" in created

    ls = dd.out("service", "ls").splitlines()
    assert columns(ls[0]) == ["ID", "NAME", "MODE", "REPLICAS", "IMAGE", "PORTS"]
    assert columns(ls[1]) == [service_id[:12], "web", "replicated", "3/3", "busybox:latest", f"*:{port}->80/tcp"]

    ps = dd.out("service", "ps", "web").splitlines()
    assert columns(ps[0]) == ["ID", "NAME", "IMAGE", "NODE", "DESIRED STATE", "CURRENT STATE", "ERROR", "PORTS"]
    rows = sorted((columns(line) for line in ps[1:]), key=lambda r: r[1])
    assert [r[1:5] for r in rows] == [[f"web.{n}", "busybox:latest", socket.gethostname(), "Running"]
                                      for n in (1, 2, 3)]
    assert all(re.fullmatch(r"Running (\d+|about a|less than a) \w+ ago", r[5]) for r in rows), rows

    inspected = json.loads(dd.out("service", "inspect", "web"))
    assert len(inspected) == 1 and inspected[0]["ID"] == service_id
    assert inspected[0]["Endpoint"]["Ports"] == [{"Protocol": "tcp", "TargetPort": 80, "PublishedPort": port,
                                                  "PublishMode": "ingress"}]
    pretty = flat(dd.out("service", "inspect", "--pretty", "web"))
    for expected in (f"ID: {service_id}", "Name: web", "Service Mode: Replicated", " Replicas: 3",
                     f" PublishedPort = {port}", " Protocol = tcp", " TargetPort = 80", " PublishMode = ingress",
                     " Image: busybox:latest", " Args: sh -c echo listening on 80; exec httpd -f -p 80"):
        assert expected in pretty, (expected, pretty)

    # the routing mesh: the port answers; every task's log, named as Docker names it
    assert eventually(lambda: answers(f"http://127.0.0.1:{port}/"), 30)
    for _ in range(6):
        assert answers(f"http://127.0.0.1:{port}/")
    logged = dd.out("service", "logs", "web").splitlines()
    assert len(logged) == 3 and {line.split(".")[1] for line in logged} == {"1", "2", "3"}, logged
    for line in logged:
        assert re.fullmatch(rf"web\.[123]\.[a-z0-9]{{12}}@{re.escape(socket.gethostname())}\s+\| listening on 80",
                            line), line

    scaled = dd.out("service", "scale", "web=2")
    assert scaled.splitlines()[0] == "web scaled to 2"
    assert "verify: Service" in scaled and replicas(dd, "web") == "2/2"

    updated = dd.out("service", "update", "--image", "busybox:v2", "web")
    assert updated.splitlines()[0] == "web"
    images = dd.out("service", "ps", "web", "--filter", "desired-state=running", "--format", "{{.Image}}")
    assert images.split() == ["busybox:v2", "busybox:v2"]

    dd.out("service", "update", "--env-add", "COLOR=blue", "web")
    spec = json.loads(dd.out("service", "inspect", "web"))[0]["Spec"]["TaskTemplate"]["ContainerSpec"]
    assert spec["Env"] == ["COLOR=blue"] and spec["Image"].startswith("busybox:v2@sha256:")  # the CLI pins it
    assert all("COLOR=blue" in dd.inspect(c)["Config"]["Env"] for c in dd.out("ps", "-q").split())

    rolled = dd.out("service", "rollback", "web")
    assert rolled.splitlines()[0] == "web" and "rollback: manually requested rollback" in rolled
    spec = json.loads(dd.out("service", "inspect", "web"))[0]["Spec"]["TaskTemplate"]["ContainerSpec"]
    assert spec.get("Env") is None and spec["Image"].startswith("busybox:v2@")  # the spec before --env-add
    assert replicas(dd, "web") == "2/2"

    nodes = dd.out("node", "ls").splitlines()
    assert columns(nodes[0]) == ["ID", "HOSTNAME", "STATUS", "AVAILABILITY", "MANAGER STATUS", "ENGINE VERSION"]
    row = columns(nodes[1])
    assert row[:5] == [f"{node_id} *", socket.gethostname(), "Ready", "Active", "Leader"] and row[5], row
    node = json.loads(dd.out("node", "inspect", "self"))[0]
    assert node["ID"] == node_id and node["ManagerStatus"]["Leader"] is True
    pretty = flat(dd.out("node", "inspect", "--pretty", "self"))
    for expected in (f"ID: {node_id}", f"Hostname: {socket.gethostname()}", " State: Ready",
                     " Availability: Active", " Leader: Yes", " Address: 127.0.0.1:2377"):
        assert expected in pretty, (expected, pretty)
    assert dd.out("node", "update", "--availability", "drain", "self") == "self"
    assert columns(dd.out("node", "ls").splitlines()[1])[3] == "Drain"
    assert eventually(lambda: dd.out("ps", "-q") == "", 60)  # the tasks left the drained node
    assert eventually(lambda: replicas(dd, "web") == "0/2", 30)
    dd.out("node", "update", "--availability", "active", "self")
    assert eventually(lambda: replicas(dd, "web") == "2/2", 60)

    secret_id = subprocess.run(["/usr/local/bin/docker", "secret", "create", "--label", "team=a", "token", "-"],
                               input="s3cr3t", env=dd.daemon.docker_env(), capture_output=True, text=True,
                               timeout=60, check=True).stdout.strip()
    assert re.fullmatch(r"[a-z0-9]{25}", secret_id)
    secrets = dd.out("secret", "ls").splitlines()
    assert columns(secrets[0]) == ["ID", "NAME", "DRIVER", "CREATED", "UPDATED"]
    assert columns(secrets[1])[:2] == [secret_id, "token"]
    config_id = subprocess.run(["/usr/local/bin/docker", "config", "create", "app.conf", "-"], input="port=80",
                               env=dd.daemon.docker_env(), capture_output=True, text=True, timeout=60,
                               check=True).stdout.strip()
    assert re.fullmatch(r"[a-z0-9]{25}", config_id)
    configs = dd.out("config", "ls").splitlines()
    assert columns(configs[0]) == ["ID", "NAME", "CREATED", "UPDATED"]
    assert columns(configs[1])[:2] == [config_id, "app.conf"]
    assert dd.out("secret", "rm", "token") == "token"
    assert dd.out("secret", "ls", "-q") == ""
