"""Swarm mode on a single node through the real docker CLI (and docker-py for raw API answers):
init/inspect/update/leave, services converging to their replicas as containers in ``docker ps``,
scale/update/rm, restart policies, global services, secrets and configs in task containers, and
the swarm coming back after ``kill -9`` of narwhald and of its etcd.

One narwhald for the module (docker.io mirrored by the session registry); each test inits a swarm
and leaves it with --force, after which nothing may be left: no containers, no etcd, no mounts.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aetcd.exceptions
import docker
import grpc
import pytest
from lib import cni_host
from lib.cni_host import InstanceNetwork
from lib.daemon import free_port, start_daemon
from lib.docker import DockerDaemon, docker_daemon, eventually, mirror_config
from lib.images import push
from lib.leaks import host_leftovers, leftovers
from lib.registry import Registry

NOT_MANAGER = ('This node is not a swarm manager. Use "docker swarm init" or "docker swarm join" to connect this '
               "node to swarm and try again.")

# Published ports put tasks on the ingress overlay: its bridge and vxlan live in the host's network namespace,
# so this module's swarms take their own address pool and data path port (parallel modules' swarms must not
# share a subnet, nor a VNI on one UDP port).
INIT = ("--advertise-addr", "127.0.0.1", "--default-addr-pool", "10.214.0.0/16",
        "--data-path-port", str(cni_host.free_port(socket.SOCK_DGRAM)))


@pytest.fixture(scope="module")
def dd(registry: Registry) -> Iterator[DockerDaemon]:
    yield from docker_daemon(registry)


def etcd_pid(dd: DockerDaemon) -> int | None:
    try:
        pid = int((dd.daemon.state / "docker" / "swarm" / "etcd.pid").read_text())
    except (OSError, ValueError):
        return None
    return pid if Path(f"/proc/{pid}").exists() else None


@pytest.fixture
def swarm(dd: DockerDaemon) -> Iterator[str]:
    """A single-node swarm for one test; left with --force after it, leaving nothing behind."""
    node_id = dd.out("swarm", "init", *INIT).split("(")[1].split(")")[0]
    pid = etcd_pid(dd)
    assert pid is not None
    try:
        yield node_id
    finally:
        dd.docker("swarm", "leave", "--force", check=False)
        assert not Path(f"/proc/{pid}").exists() or _zombie(pid), "etcd still runs after swarm leave"
        assert not (dd.daemon.root / "docker" / "swarm").exists()
        assert dd.out("ps", "-aq") == ""
        assert mesh_rules(dd) == []
        assert leftovers(dd.daemon) == {}


def etcd_processes(dd: DockerDaemon) -> list[int]:
    """Live etcd processes serving this daemon's data dir."""
    data_dir = str(dd.daemon.root / "docker" / "swarm" / "etcd")
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"etcd") and data_dir.encode() in argv and not _zombie(int(proc.name)):
            found.append(int(proc.name))
    return found


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] in ("Z", "X")
    except OSError:
        return True


def api(dd: DockerDaemon) -> docker.APIClient:
    return docker.APIClient(base_url=f"unix://{dd.daemon.docker_socket}", version="1.43", timeout=60)


def replicas(dd: DockerDaemon, name: str) -> str:
    return dd.docker("service", "ls", "--filter", f"name={name}", "--format", "{{.Replicas}}").stdout.strip()


def tasks(dd: DockerDaemon, service: str) -> list[dict[str, Any]]:
    client = api(dd)
    try:
        return list(client.tasks(filters={"service": service}))
    finally:
        client.close()


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback only
            return int(response.status)
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return 0


def test_not_in_a_swarm(dd: DockerDaemon) -> None:
    proc = dd.docker("service", "ls", check=False)
    assert proc.returncode != 0 and NOT_MANAGER in proc.stderr
    proc = dd.docker("swarm", "leave", check=False)
    assert "This node is not part of a swarm" in proc.stderr
    client = api(dd)
    try:
        response = client._get(client._url("/_ping"))
        assert response.headers["Swarm"] == "inactive"
        with pytest.raises(docker.errors.APIError) as err:
            client.inspect_swarm()
        assert err.value.response.status_code == 503
    finally:
        client.close()
    assert json.loads(dd.out("info", "--format", "{{json .Swarm}}"))["LocalNodeState"] == "inactive"


def test_init_inspect_update_tokens(dd: DockerDaemon, swarm: str) -> None:
    proc = dd.docker("swarm", "init", "--advertise-addr", "127.0.0.1", check=False)
    assert proc.returncode != 0 and "This node is already part of a swarm" in proc.stderr
    info = json.loads(dd.out("info", "--format", "{{json .Swarm}}"))
    assert info["LocalNodeState"] == "active" and info["ControlAvailable"] and info["NodeID"] == swarm
    assert info["Nodes"] == 1 and info["Managers"] == 1
    worker = dd.out("swarm", "join-token", "-q", "worker")
    assert worker.startswith("SWMTKN-1-") and len(worker.split("-")[2]) == 50 and len(worker.split("-")[3]) == 25
    rotated = dd.out("swarm", "join-token", "--rotate", "-q", "worker")
    assert rotated != worker and rotated.split("-")[2] == worker.split("-")[2]  # same CA digest, new secret
    nodes = dd.out("node", "ls", "--format", "{{.ID}} {{.Status}} {{.Availability}} {{.ManagerStatus}}")
    assert nodes.split() == [swarm, "Ready", "Active", "Leader"]
    dd.docker("swarm", "update", "--task-history-limit", "2")
    client = api(dd)
    try:
        inspected = client.inspect_swarm()
        assert inspected["Spec"]["Orchestration"]["TaskHistoryRetentionLimit"] == 2
        assert inspected["Spec"]["Raft"]["ElectionTick"] == 10  # zeros sent by the CLI keep the defaults
        with pytest.raises(docker.errors.APIError) as err:  # a stale version is refused
            client.update_swarm(version=inspected["Version"]["Index"] - 1, swarm_spec={})
        assert "update out of sequence" in err.value.explanation
        response = client._get(client._url("/_ping"))
        assert response.headers["Swarm"] == "active/manager"
    finally:
        client.close()
    out = dd.out("swarm", "update", "--autolock=true")
    assert "SWMKEY-1-" in out
    key = dd.out("swarm", "unlock-key", "-q")
    assert key.startswith("SWMKEY-1-") and key in out


def test_replicated_service_lifecycle(dd: DockerDaemon, swarm: str) -> None:
    created = dd.out("service", "create", "--replicas", "3", "--name", "web", "--stop-grace-period", "1s",
                     "busybox", "sleep", "1d")
    service_id = created.splitlines()[0]
    assert "verify: Service" in created and "converged" in created  # the CLI's progress monitor saw 3/3
    assert replicas(dd, "web") == "3/3"  # the CLI waited for convergence
    names = dd.out("ps", "--format", "{{.Names}}").split()
    assert len(names) == 3 and all(n.startswith("web.") for n in names)
    assert sorted(n.split(".")[1] for n in names) == ["1", "2", "3"]
    task_ids = {t["ID"] for t in tasks(dd, "web")}
    assert {n.split(".")[2] for n in names} == task_ids
    inspected = json.loads(dd.out("service", "inspect", "web"))[0]
    assert inspected["ID"] == service_id and inspected["Spec"]["Mode"]["Replicated"]["Replicas"] == 3
    labels = dd.inspect(names[0])["Config"]["Labels"]
    assert labels["com.docker.swarm.service.name"] == "web" and labels["com.docker.swarm.node.id"] == swarm
    # exec works in a task container
    assert dd.out("exec", names[0], "echo", "hi") == "hi"
    ps = dd.out("service", "ps", "web", "--format", "{{.Name}} {{.DesiredState}} {{.CurrentState}}")
    assert sorted(line.split()[0] for line in ps.splitlines()) == ["web.1", "web.2", "web.3"]
    assert all(" Running Running" in line for line in ps.splitlines())

    proc = dd.docker("service", "create", "--name", "web", "busybox", "true", check=False)
    assert proc.returncode != 0 and "name conflicts with an existing object" in proc.stderr

    dd.out("service", "scale", "web=1")
    assert eventually(lambda: len(dd.out("ps", "-aq").split()) == 1, 60)
    assert replicas(dd, "web") == "1/1"

    dd.out("service", "update", "--env-add", "COLOR=blue", "web")
    assert eventually(lambda: replicas(dd, "web") == "1/1", 60)
    running = dd.out("ps", "--format", "{{.Names}}").split()
    assert len(running) == 1 and "COLOR=blue" in dd.inspect(running[0])["Config"]["Env"]
    history = [t for t in tasks(dd, "web") if t.get("Slot") == 1]
    assert {t["DesiredState"] for t in history} == {"running", "shutdown"}

    dd.docker("swarm", "update", "--task-history-limit", "2")
    for n in range(3):
        dd.out("service", "update", "--env-add", f"N={n}", "web")
    # the running task and one old one per slot are kept; older ones go, their containers too
    assert eventually(lambda: len([t for t in tasks(dd, "web") if t.get("Slot") == 1]) == 2, 30)
    assert eventually(lambda: len(dd.out("ps", "-aq").split()) == 2, 30)

    dd.out("service", "rollback", "web")
    def rolled_back() -> bool:  # the previous spec: N=1 without N=2
        envs = [dd.inspect(n)["Config"]["Env"] for n in dd.out("ps", "--format", "{{.Names}}").split()]
        return bool(envs) and all("N=1" in env and "N=2" not in env for env in envs)

    assert eventually(rolled_back, 60)

    dd.out("service", "rm", "web")
    assert eventually(lambda: dd.out("ps", "-aq") == "", 60)
    assert eventually(lambda: not tasks_all(dd), 30)
    proc = dd.docker("service", "inspect", "web", check=False)
    assert proc.returncode != 0 and "no such service: web" in proc.stderr.lower()


def tasks_all(dd: DockerDaemon) -> list[dict[str, Any]]:
    client = api(dd)
    try:
        return list(client.tasks())
    finally:
        client.close()


def test_restart_policy_and_global_mode(dd: DockerDaemon, swarm: str) -> None:
    dd.out("service", "create", "--detach", "--name", "failing", "--restart-condition", "on-failure",
           "--restart-max-attempts", "2", "--restart-delay", "100ms", "busybox", "sh", "-c", "exit 3")
    # the first run and two restarts fail, then the orchestrator stops restarting
    assert eventually(lambda: sum(t["Status"]["State"] == "failed" for t in tasks(dd, "failing")) == 3, 60)
    failed = tasks(dd, "failing")
    assert all(t["Status"]["Err"] == "task: non-zero exit (3)" for t in failed)
    assert all(t["Status"]["ContainerStatus"]["ExitCode"] == 3 for t in failed)
    dd.out("service", "create", "--detach", "--name", "done", "--restart-condition", "none", "busybox", "true")
    assert eventually(lambda: [t["Status"]["State"] for t in tasks(dd, "done")] == ["complete"], 60)

    dd.out("service", "create", "--mode", "global", "--name", "agent", "busybox", "sleep", "1d")
    global_tasks = tasks(dd, "agent")
    assert len(global_tasks) == 1 and global_tasks[0]["NodeID"] == swarm and "Slot" not in global_tasks[0]
    proc = dd.docker("service", "scale", "agent=2", check=False)
    assert proc.returncode != 0 and "scale can only be used with replicated" in proc.stderr
    assert sum(t["Status"]["State"] == "failed" for t in tasks(dd, "failing")) == 3  # still no 4th attempt
    for name in ("failing", "done", "agent"):
        dd.out("service", "rm", name)


def test_secrets_and_configs(dd: DockerDaemon, swarm: str) -> None:
    secret_id = dd.docker("secret", "create", "--label", "a=b", "pw", "-", input_="s3cret").stdout.strip()
    proc = dd.docker("secret", "create", "pw", "-", input_="x", check=False)
    assert proc.returncode != 0 and "secret pw already exists" in proc.stderr
    assert dd.out("secret", "ls", "--format", "{{.ID}} {{.Name}}") == f"{secret_id} pw"
    inspected = json.loads(dd.out("secret", "inspect", "pw"))[0]
    assert "Data" not in inspected["Spec"] and inspected["Spec"]["Labels"] == {"a": "b"}
    dd.docker("config", "create", "app.conf", "-", input_="key=value\n")
    assert json.loads(dd.out("config", "inspect", "app.conf"))[0]["Spec"]["Data"] == "a2V5PXZhbHVlCg=="

    dd.out("service", "create", "--name", "consumer", "--secret", "source=pw,mode=0400,uid=1000,gid=1001",
           "--config", "source=app.conf,target=/etc/app.conf", "busybox", "sleep", "1d")
    name = dd.out("ps", "--format", "{{.Names}}")
    assert dd.out("exec", name, "cat", "/run/secrets/pw") == "s3cret"
    assert dd.out("exec", name, "stat", "-c", "%a %u %g", "/run/secrets/pw") == "400 1000 1001"
    assert dd.out("exec", name, "cat", "/etc/app.conf") == "key=value"
    proc = dd.docker("secret", "rm", "pw", check=False)
    assert proc.returncode != 0 and "secret 'pw' is in use by the following service: consumer" in proc.stderr
    proc = dd.docker("config", "rm", "app.conf", check=False)
    assert "config 'app.conf' is in use by the following service: consumer" in proc.stderr
    dd.out("service", "rm", "consumer")
    assert eventually(lambda: dd.out("ps", "-aq") == "", 60)
    dd.out("secret", "rm", "pw")
    dd.out("config", "rm", "app.conf")
    assert dd.out("secret", "ls", "-q") == "" and dd.out("config", "ls", "-q") == ""
    tmpfs = dd.daemon.state / "docker" / "swarm" / "files"
    assert eventually(lambda: not any(tmpfs.iterdir()), 30)  # the task's secret files go with its container


def test_swarm_survives_kill9_of_narwhald_and_etcd(dd: DockerDaemon, swarm: str) -> None:
    dd.out("service", "create", "--replicas", "2", "--name", "durable", "busybox", "sleep", "1d")
    before = set(dd.out("ps", "-q").split())
    dd.daemon.kill9()
    dd.daemon.start()
    info = json.loads(dd.out("info", "--format", "{{json .Swarm}}"))
    assert info["LocalNodeState"] == "active" and info["NodeID"] == swarm
    assert eventually(lambda: replicas(dd, "durable") == "2/2", 60)
    assert set(dd.out("ps", "-q").split()) == before  # the running tasks were adopted, not replaced

    pid = etcd_pid(dd)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert eventually(lambda: etcd_pid(dd) not in (None, pid), 30)  # the watchdog started it again
    assert eventually(lambda: dd.docker("service", "ls", check=False).returncode == 0, 30)  # and it serves
    dd.out("service", "scale", "durable=3")
    assert replicas(dd, "durable") == "3/3"

    # both at once: narwhald and its etcd killed; the next narwhald starts etcd again, adopts the tasks
    before = set(dd.out("ps", "-q").split())
    pid = etcd_pid(dd)
    assert pid is not None
    dd.daemon.kill9()
    os.kill(pid, signal.SIGKILL)
    dd.daemon.start()
    assert eventually(lambda: etcd_pid(dd) not in (None, pid), 30)
    assert eventually(lambda: dd.docker("service", "ls", check=False).returncode == 0, 30)
    assert eventually(lambda: replicas(dd, "durable") == "3/3", 60)
    assert set(dd.out("ps", "-q").split()) == before  # adopted, not replaced
    assert dd.out("ps", "-aq", "--filter", "status=exited") == ""
    running = [t for t in tasks(dd, "durable") if t["DesiredState"] == "running"]
    assert sorted(t["Slot"] for t in running) == [1, 2, 3] and all(t["Status"]["State"] == "running" for t in running)
    assert etcd_processes(dd) == [etcd_pid(dd)]  # one etcd for this node, none left over
    dd.out("service", "rm", "durable")
    assert eventually(lambda: dd.out("ps", "-aq") == "", 60)


SWARM_LOCKED = ('Swarm is encrypted and needs to be unlocked before it can be used. Please use "docker swarm unlock" '
                "to unlock it.")


def unlock(dd: DockerDaemon, key: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["/usr/local/bin/docker", "swarm", "unlock"], input=key + "\n", env=dd.daemon.docker_env(),
                          capture_output=True, text=True, timeout=60, check=False)


def test_autolock(dd: DockerDaemon, swarm: str) -> None:
    """With autolock a secret's data and the CA key are not in etcd's files, a restarted node is locked (moby's
    503) until `swarm unlock` with the right key, rotation makes the old key useless; tasks come back after
    unlocking."""
    key = dd.out("swarm", "update", "--autolock=true").split("SWMKEY-1-")[1].split()[0]
    key = "SWMKEY-1-" + key
    assert dd.out("swarm", "unlock-key", "-q") == key
    plaintext = "autolock-plaintext-" + os.urandom(6).hex()
    proc = subprocess.run(["/usr/local/bin/docker", "secret", "create", "s1", "-"], input=plaintext,
                          env=dd.daemon.docker_env(), capture_output=True, text=True, timeout=60, check=True)
    assert proc.stdout.strip()
    dd.out("service", "create", "--name", "holder", "--secret", "s1", "busybox", "sleep", "1d")
    container = dd.out("ps", "-q")
    assert dd.out("exec", container, "cat", "/run/secrets/s1") == plaintext
    etcd_dir = dd.daemon.root / "docker" / "swarm" / "etcd"
    found = subprocess.run(["grep", "-rlaF", plaintext, str(etcd_dir)], capture_output=True, text=True, check=False)
    assert found.stdout == "", f"secret data in etcd's files: {found.stdout}"
    # nor is the root CA's private key (sealed with the DEK, which autolock wraps); its certificate is
    found = subprocess.run(["grep", "-rlaF", "PRIVATE KEY", str(etcd_dir)], capture_output=True, text=True, check=False)
    assert found.stdout == "", f"a private key in etcd's files: {found.stdout}"
    assert subprocess.run(["grep", "-rlaF", "BEGIN CERTIFICATE", str(etcd_dir)], capture_output=True,
                          check=False).returncode == 0

    dd.daemon.stop()
    dd.daemon.start()
    info = json.loads(dd.out("info", "--format", "{{json .Swarm}}"))
    assert info["LocalNodeState"] == "locked" and info["Error"] == SWARM_LOCKED
    proc = dd.docker("node", "ls", check=False)
    assert proc.returncode != 0 and SWARM_LOCKED in proc.stderr
    client = api(dd)
    try:
        assert client._get(client._url("/_ping")).headers["Swarm"] == "locked"
        with pytest.raises(docker.errors.APIError) as err:
            client.inspect_swarm()
        assert err.value.status_code == 503 and err.value.explanation == SWARM_LOCKED
        with pytest.raises(docker.errors.APIError) as err:
            client.unlock_swarm("SWMKEY-1-" + "A" * 43)
        assert err.value.status_code == 401
        assert err.value.explanation == "swarm could not be unlocked: invalid key provided"
        with pytest.raises(docker.errors.APIError) as err:
            client.unlock_swarm("not-a-key")
        assert err.value.status_code == 400
    finally:
        client.close()
    proc = dd.docker("swarm", "leave", check=False)
    assert "Swarm is encrypted and locked. Please unlock it first" in proc.stderr
    proc = unlock(dd, key)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(dd.out("info", "--format", "{{json .Swarm}}"))["LocalNodeState"] == "active"
    assert "swarm is not locked" in unlock(dd, key).stderr  # 409 as moby
    assert eventually(lambda: replicas(dd, "holder") == "1/1", 60)
    dd.out("service", "scale", "holder=2")  # a new task opens the sealed secret again
    for cid in dd.out("ps", "-q").split():
        assert dd.out("exec", cid, "cat", "/run/secrets/s1") == plaintext

    new_key = dd.out("swarm", "unlock-key", "--rotate", "-q")
    assert new_key.startswith("SWMKEY-1-") and new_key != key
    dd.daemon.kill9()
    dd.daemon.start()
    assert json.loads(dd.out("info", "--format", "{{json .Swarm}}"))["LocalNodeState"] == "locked"
    assert "invalid key provided" in unlock(dd, key).stderr
    assert unlock(dd, new_key).returncode == 0
    assert eventually(lambda: replicas(dd, "holder") == "2/2", 60)
    dd.out("swarm", "update", "--autolock=false")
    assert "no unlock key is set" in dd.docker("swarm", "unlock-key", "-q", check=False).stderr
    dd.daemon.stop()
    dd.daemon.start()
    assert json.loads(dd.out("info", "--format", "{{json .Swarm}}"))["LocalNodeState"] == "active"
    dd.out("service", "rm", "holder")
    dd.out("secret", "rm", "s1")
    assert eventually(lambda: dd.out("ps", "-aq") == "", 60)


def test_locked_node_leaves_with_force(dd: DockerDaemon) -> None:
    out = dd.out("swarm", "init", "--autolock", "--advertise-addr", "127.0.0.1")
    assert "SWMKEY-1-" in out
    dd.out("service", "create", "--name", "lockedaway", "busybox", "sleep", "1d")
    dd.daemon.kill9()
    dd.daemon.start()
    assert json.loads(dd.out("info", "--format", "{{json .Swarm}}"))["LocalNodeState"] == "locked"
    dd.out("swarm", "leave", "--force")
    assert json.loads(dd.out("info", "--format", "{{json .Swarm}}"))["LocalNodeState"] == "inactive"
    assert not (dd.daemon.root / "docker" / "swarm").exists()
    assert dd.out("ps", "-aq") == ""
    assert mesh_rules(dd) == []
    assert leftovers(dd.daemon) == {}


def test_cleanup_after_kill9_of_a_swarm_node(registry: Registry) -> None:
    """narwhald killed -9 on a swarm with a published port: `narwhald cleanup --force` stops the task
    containers and the swarm's etcd, and removes the mesh chains with the rest."""
    push(registry.host, "library/busybox")
    d = start_daemon(mirror_config(registry.host))
    try:
        node = DockerDaemon(d)
        node.out("swarm", "init", *INIT)
        node.out("service", "create", "--detach", "--name", "crashed", "-p", f"{free_port()}:80", "busybox",
                 "sleep", "1d")
        assert eventually(lambda: any("-j DNAT" in r for r in mesh_rules(node)), 90)  # its task runs
        assert etcd_processes(node)
        d.kill9()
        done = d.cleanup("--force", "--remove-dirs")
        assert done.returncode == 0, done.stderr
        assert "stopped the swarm's etcd" in done.stdout + done.stderr
        assert etcd_processes(node) == []
        assert mesh_rules(node) == []
        assert host_leftovers(d) == {}
    finally:
        network = InstanceNetwork.of(d.root, d.base / "net.d")
        d.destroy()
        network.remove()


def test_swarm_cli_not_manager_commands_hidden_when_inactive(dd: DockerDaemon) -> None:
    """The docker CLI shows `service` only when /_ping says active/manager."""
    proc = subprocess.run(["/usr/local/bin/docker", "--help"], env=dd.daemon.docker_env(), capture_output=True,
                          text=True, timeout=60)
    assert "service" not in [line.split()[0] for line in proc.stdout.splitlines() if line.startswith("  ")]


def test_placement_update_status_drain_and_logs(dd: DockerDaemon, swarm: str) -> None:
    dd.out("service", "create", "--detach", "--name", "nowhere", "--constraint", "node.labels.zone==moon",
           "busybox", "sleep", "1d")
    assert eventually(lambda: [t["Status"].get("Err") for t in tasks(dd, "nowhere")] == [
        "no suitable node (scheduling constraints not satisfied on 1 node)"], 30)
    dd.out("node", "update", "--label-add", "zone=moon", "self")
    assert eventually(lambda: replicas(dd, "nowhere") == "1/1", 60)
    proc = dd.docker("service", "create", "--name", "bad", "--constraint", "node.zone~moon", "busybox", check=False)
    assert proc.returncode != 0 and "invalid constraint" in proc.stderr
    dd.out("service", "create", "--detach", "--name", "big", "--reserve-memory", "1000000G", "busybox", "true")
    assert eventually(lambda: [t["Status"].get("Err") for t in tasks(dd, "big")] == [
        "no suitable node (insufficient resources on 1 node)"], 30)

    dd.out("service", "create", "--name", "talker", "busybox", "sh", "-c", "echo hello from $HOSTNAME; sleep 1d")
    logs = dd.out("service", "logs", "talker")
    assert logs.startswith("talker.1.") and "| hello from " in logs
    dd.out("service", "update", "--env-add", "X=1", "talker")

    def update_status() -> dict[str, Any]:
        status: dict[str, Any] = json.loads(dd.out("service", "inspect", "talker"))[0]["UpdateStatus"]
        return status

    # the CLI's own convergence check may return a moment before the Monitor period of the update ends
    assert eventually(lambda: update_status()["State"] == "completed", 30)
    assert update_status()["Message"] == "update completed"

    dd.out("node", "update", "--availability", "drain", "self")
    assert eventually(lambda: dd.out("ps", "-q") == "", 60)  # drained: every task shut down
    def pending() -> list[str]:  # the replacement the orchestrator makes waits for a node
        return [t["Status"]["State"] for t in tasks(dd, "talker") if t["DesiredState"] == "running"]

    assert eventually(lambda: pending() == ["pending"], 30), pending()
    dd.out("node", "update", "--availability", "active", "self")
    assert eventually(lambda: replicas(dd, "talker") == "1/1", 60)
    for name in ("nowhere", "big", "talker"):
        dd.out("service", "rm", name)


def http_body(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback/host only
            return str(response.read().decode().strip())
    except OSError:
        return ""


def mesh_rules(dd: DockerDaemon) -> list[str]:
    instance = hashlib.sha256(str(dd.daemon.root.resolve()).encode()).hexdigest()[:8]
    out = subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if f"NW-MESH-{instance}" in line or f"NW-MESHMQ-{instance}" in line]


def node_address() -> str:
    """A non-loopback address of this host (the routing mesh answers there too)."""
    out = subprocess.run(["ip", "-4", "-o", "route", "get", "192.0.2.255"], capture_output=True, text=True,
                         check=False).stdout.split()
    return out[out.index("src") + 1] if "src" in out else "127.0.0.1"


WEB = ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www"]


def test_routing_mesh(dd: DockerDaemon, swarm: str) -> None:
    """-p 8080:80 on 3 replicas: the port answers on 127.0.0.1 and the node's address, round robin over the
    three tasks; the rules follow scale and removal; mode=host binds only where a task runs."""
    port = free_port()
    dd.out("service", "create", "--replicas", "3", "--name", "web", "-p", f"{port}:80", "busybox", *WEB)
    assert replicas(dd, "web") == "3/3"
    hostnames = {c[:12] for c in dd.out("ps", "-q", "--no-trunc").split()}
    assert len(hostnames) == 3
    for host in ("127.0.0.1", node_address()):
        assert eventually(lambda h=host: http_body(f"http://{h}:{port}/") in hostnames, 30)
        seen = [http_body(f"http://{host}:{port}/") for _ in range(9)]
        assert sorted(seen) == sorted(list(hostnames) * 3), seen  # every task, each as often
    endpoint = json.loads(dd.out("service", "inspect", "web"))[0]["Endpoint"]
    assert endpoint["Ports"] == [{"Protocol": "tcp", "TargetPort": 80, "PublishedPort": port,
                                  "PublishMode": "ingress"}]
    assert endpoint["Spec"]["Mode"] == "vip"
    # a second service cannot take the port; one without a published port gets one from 30000-32767
    proc = dd.docker("service", "create", "--name", "web2", "-p", f"{port}:80", "busybox", *WEB, check=False)
    assert proc.returncode != 0
    assert f"port '{port}' is already in use by service 'web'" in proc.stderr
    dd.out("service", "create", "--detach", "--name", "auto", "-p", "80", "busybox", *WEB)
    auto = json.loads(dd.out("service", "inspect", "auto"))[0]["Endpoint"]["Ports"][0]
    assert 30000 <= auto["PublishedPort"] <= 32767 and auto["PublishMode"] == "ingress"
    dd.out("service", "rm", "auto")
    # scaled down: only the remaining task answers, and the rules say so
    dd.out("service", "scale", "web=1")
    assert eventually(lambda: len([r for r in mesh_rules(dd) if "-j DNAT" in r]) == 1, 60), mesh_rules(dd)
    left = {c[:12] for c in dd.out("ps", "-q", "--no-trunc", "--filter", "status=running").split()}
    assert eventually(lambda: {http_body(f"http://127.0.0.1:{port}/") for _ in range(3)} == left, 30)
    dd.out("service", "rm", "web")
    assert eventually(lambda: not [r for r in mesh_rules(dd) if "-j DNAT" in r], 30), mesh_rules(dd)
    # mode=host: bound like -p on the node running the task
    hport = free_port()
    dd.out("service", "create", "--name", "httpd", "--publish", f"mode=host,target=80,published={hport}",
           "busybox", *WEB)
    name = dd.out("ps", "--format", "{{.Names}}")
    assert dd.out("port", name).startswith(f"80/tcp -> 0.0.0.0:{hport}")
    assert eventually(lambda: http_status(f"http://127.0.0.1:{hport}/") == 200, 30)
    dd.out("service", "rm", "httpd")


def test_service_events(dd: DockerDaemon, swarm: str) -> None:
    started = int(time.time())
    dd.out("service", "create", "--detach", "--name", "httpd", "busybox", "sleep", "1d")
    dd.out("service", "create", "--detach", "--name", "meshed", "-p", f"{free_port()}:80", "busybox",
           "sleep", "1d")
    dd.out("service", "rm", "httpd", "meshed")
    client = api(dd)
    try:
        events = [f"{e['Type']} {e['Action']} {e['scope']} {e['Actor']['Attributes']['name']}"
                  for e in client.events(since=started, until=int(time.time()) + 1, decode=True,
                                         filters={"type": "service"})]
    finally:
        client.close()
    assert events == ["service create swarm httpd", "service create swarm meshed",
                      "service remove swarm httpd", "service remove swarm meshed"]


def test_update_order_start_first(dd: DockerDaemon, swarm: str) -> None:
    """start-first: the replacement runs before the old task is told to stop (stop-first: the other way round)."""
    dd.out("service", "create", "--name", "sf", "--update-order", "start-first", "--stop-grace-period", "1s",
           "busybox", "sleep", "1d")
    dd.out("service", "update", "--env-add", "V=2", "sf")
    assert eventually(lambda: sorted(t["Status"]["State"] for t in tasks(dd, "sf")) == ["running", "shutdown"], 30)
    by_state = {t["Status"]["State"]: t for t in tasks(dd, "sf")}
    new, old = by_state["running"], by_state["shutdown"]
    assert new["CreatedAt"] > old["CreatedAt"]
    # the old task was stopped only after its successor ran: its shutdown is later than the new one's start
    assert old["Status"]["Timestamp"] > new["Status"]["Timestamp"]
    dd.out("service", "rm", "sf")


class ExternalEtcd:
    """A standalone etcd (as a user's control plane would run), on free loopback ports; stoppable.  With
    ``tls``, its clients must present a certificate of its own CA (``client_files``: one for narwhald)."""

    def __init__(self, tls: bool = False) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="nw-etcd-"))
        self.port, self.peer = free_port(), free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.tls_flags: list[str] = []
        if tls:
            from pkg.docker.swarm import ca

            root = ca.new_root()
            server, client = ca.issue(root, "etcd", "manager", "ext", ["127.0.0.1"]), ca.issue(root, "nw", "worker",
                                                                                               "ext", [])
            for name, data in (("ca.crt", root.cert_pem), ("server.crt", server.cert_pem),
                               ("server.key", server.key_pem), ("client.crt", client.cert_pem),
                               ("client.key", client.key_pem)):
                (self.base / name).write_bytes(data)
            self.tls_flags = ["--cert-file", str(self.base / "server.crt"), "--key-file", str(self.base / "server.key"),
                              "--trusted-ca-file", str(self.base / "ca.crt"), "--client-cert-auth"]

    @property
    def scheme(self) -> str:
        return "https" if self.tls_flags else "http"

    def client_files(self) -> tuple[Path, Path, Path]:
        return self.base / "ca.crt", self.base / "client.crt", self.base / "client.key"

    def start(self) -> None:
        client, peer = f"{self.scheme}://127.0.0.1:{self.port}", f"http://127.0.0.1:{self.peer}"
        self.proc = subprocess.Popen(
            ["etcd", "--name", "ext", "--data-dir", str(self.base / "data"), "--listen-client-urls", client,
             "--advertise-client-urls", client, "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", f"ext={peer}", *self.tls_flags], stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(30)
            self.proc = None


@pytest.fixture
def external_etcd() -> Iterator[ExternalEtcd]:
    etcd = ExternalEtcd()
    etcd.start()
    try:
        yield etcd
    finally:
        etcd.stop()
        shutil.rmtree(etcd.base, ignore_errors=True)


def etcd_keys(port: int, tls: tuple[Path, Path, Path] | None = None) -> list[str]:
    import asyncio

    from pkg.docker.swarm.tls import TLSClient, TLSFiles

    async def keys() -> list[str]:
        client = (aetcd.Client(host="127.0.0.1", port=port, timeout=10) if tls is None
                  else TLSClient("127.0.0.1", port, TLSFiles(*tls), timeout=5))
        async with client:
            return [kv.key.decode() for kv in await client.get_prefix(b"/narwhal/swarm/")]

    return asyncio.run(keys())


def test_external_etcd_tls(registry: Registry) -> None:
    """An https:// external etcd that wants client certificates: narwhald presents the one the config names
    (swarm-etcd-ca-file/-cert-file/-key-file); a client without one is refused."""
    etcd = ExternalEtcd(tls=True)
    etcd.start()
    ca_file, cert_file, key_file = etcd.client_files()
    d = start_daemon(mirror_config(registry.host) + f'swarm-etcd-endpoints: ["https://127.0.0.1:{etcd.port}"]\n'
                     f"swarm-etcd-ca-file: {ca_file}\nswarm-etcd-cert-file: {cert_file}\n"
                     f"swarm-etcd-key-file: {key_file}\n")
    dd = DockerDaemon(d)
    try:
        assert eventually(lambda: dd.docker("version", check=False).returncode == 0, 30)
        dd.out("swarm", "init", "--advertise-addr", "127.0.0.1")
        assert etcd_pid(dd) is None
        assert len(dd.out("node", "ls", "-q").split()) == 1
        keys = etcd_keys(etcd.port, etcd.client_files())
        assert "/narwhal/swarm/cluster" in keys and any(k.startswith("/narwhal/swarm/objects/nodes/") for k in keys)
        with pytest.raises((aetcd.exceptions.ClientError, grpc.aio.AioRpcError)):
            etcd_keys(etcd.port)  # no certificate: refused at the handshake
        dd.out("swarm", "leave", "--force")
        assert etcd_keys(etcd.port, etcd.client_files()) == []
        assert leftovers(d) == {}
    finally:
        dd.rm_all()
        network = InstanceNetwork.of(d.root, d.base / "net.d")
        d.destroy()
        network.remove()
        etcd.stop()
        shutil.rmtree(etcd.base, ignore_errors=True)


def test_external_etcd(registry: Registry, external_etcd: ExternalEtcd) -> None:
    """swarm-etcd-endpoints: no private member; the swarm lives under /narwhal/swarm of the given cluster,
    comes back after kill -9 (also when that etcd is down while narwhald starts), and leaving as the last
    manager deletes it there."""
    push(registry.host, "library/busybox")
    port = external_etcd.port
    d = start_daemon(mirror_config(registry.host) + f'swarm-etcd-endpoints: ["127.0.0.1:{port}"]\n')
    dd = DockerDaemon(d)
    try:
        assert eventually(lambda: dd.docker("version", check=False).returncode == 0, 30)
        dd.out("swarm", "init", "--advertise-addr", "127.0.0.1")
        assert etcd_pid(dd) is None and not (d.root / "docker" / "swarm" / "etcd").exists()
        dd.out("service", "create", "--name", "ext", "--stop-grace-period", "1s", "busybox", "sleep", "1d")
        keys = etcd_keys(port)
        assert "/narwhal/swarm/cluster" in keys and any(k.startswith("/narwhal/swarm/objects/services/") for k in keys)
        d.kill9()
        external_etcd.stop()
        d.start()  # the swarm's store is down: narwhald starts all the same and keeps trying
        info = json.loads(dd.out("info", "--format", "{{json .Swarm}}"))
        assert info["LocalNodeState"] == "error" and info["Error"]
        proc = dd.docker("service", "ls", check=False)
        assert proc.returncode != 0 and "this node's swarm is not reachable" in proc.stderr
        assert "already part of a swarm" in dd.docker("swarm", "init", check=False).stderr
        external_etcd.start()
        assert eventually(lambda: dd.docker("service", "ls", check=False).returncode == 0, 30)
        assert eventually(lambda: replicas(dd, "ext") == "1/1", 60)
        dd.out("swarm", "leave", "--force")
        assert etcd_keys(port) == []
        assert dd.out("ps", "-aq") == ""
        assert leftovers(d) == {}
    finally:
        dd.rm_all()
        network = InstanceNetwork.of(d.root, d.base / "net.d")
        d.destroy()
        network.remove()


def test_update_failure_actions(dd: DockerDaemon, swarm: str) -> None:
    """A new task failing during an update: pause stops the rollout, rollback brings the previous spec back."""
    def update_status(name: str) -> dict[str, Any]:
        return json.loads(dd.out("service", "inspect", name))[0].get("UpdateStatus") or {}

    dd.out("service", "create", "--name", "up", "--stop-grace-period", "1s", "--restart-delay", "100ms",
           "busybox", "sleep", "1d")
    dd.out("service", "update", "--detach", "--args", "false", "--update-failure-action", "pause", "up")
    assert eventually(lambda: update_status("up").get("State") == "paused", 60)
    assert update_status("up")["Message"].startswith("update paused due to failure or early termination of task ")

    dd.out("service", "update", "--detach", "--args", "sleep 1d", "up")  # a new update resumes from there
    assert eventually(lambda: update_status("up").get("State") == "completed", 60)

    dd.out("service", "update", "--detach", "--args", "false", "--update-failure-action", "rollback", "up")
    assert eventually(lambda: update_status("up").get("State") == "rollback_completed", 60)
    assert update_status("up")["Message"] == "rollback completed"
    spec = json.loads(dd.out("service", "inspect", "up"))[0]["Spec"]["TaskTemplate"]["ContainerSpec"]
    assert spec["Args"] == ["sleep", "1d"]
    assert eventually(lambda: replicas(dd, "up") == "1/1", 60)
    dd.out("service", "rm", "up")


def test_service_logs_follow(dd: DockerDaemon, swarm: str, tmp_path: Path) -> None:
    """-f follows the tasks running when it began and the ones started later; --tail/--timestamps/--since
    apply to each task's log, as moby's log broker does."""
    dd.out("service", "create", "--name", "chatty", "--replicas", "2", "--stop-grace-period", "1s", "busybox",
           "sh", "-c", "echo first; echo one; echo two; sleep 15; echo second; sleep 1d")
    out = tmp_path / "logs"
    with open(out, "w") as sink:
        follower = subprocess.Popen(["/usr/local/bin/docker", "service", "logs", "--follow", "chatty"],
                                    env=dd.daemon.docker_env(), stdout=sink, stderr=subprocess.STDOUT)
    try:
        assert eventually(lambda: out.read_text().count("| first") == 2, 30), out.read_text()
        assert "| second" not in out.read_text()  # (the create returned well before the tasks wrote it)
        # a task started after the follow began is followed too, from its first line
        dd.out("service", "scale", "chatty=3")
        assert eventually(lambda: out.read_text().count("| first") == 3, 60), out.read_text()
        # lines written after the follow began arrive too, from every replica, each with its task's name
        assert eventually(lambda: out.read_text().count("| second") == 3, 60), out.read_text()
        quiet_since = f"{time.time():.6f}"  # every task has written all it will write
        lines = out.read_text().splitlines()
        assert sorted(line.split(".")[1] for line in lines if line.endswith("| first")) == ["1", "2", "3"]
        assert follower.poll() is None  # -f does not end while the tasks run
    finally:
        follower.terminate()
        follower.wait(10)
    tail = dd.out("service", "logs", "--tail", "1", "--no-task-ids", "chatty").splitlines()
    assert sorted(line.split("|", 1)[1].strip() for line in tail) == ["second"] * 3
    assert all(line.split(".")[0] == "chatty" for line in tail)
    stamped = dd.out("service", "logs", "--timestamps", "--tail", "2", "chatty").splitlines()
    assert len(stamped) == 6
    for line in stamped:  # "<RFC3339Nano> <name>.<slot>.<task id>@<node>    | <line>" (the CLI puts it first)
        stamp = line.split(" ", 1)[0]
        assert stamp[:4].isdigit() and stamp.endswith("Z") and "T" in stamp, line
    assert dd.out("service", "logs", "--since", quiet_since, "chatty") == ""
    assert len(dd.out("service", "logs", "--since", "10m", "chatty").splitlines()) == 12
    raw = api(dd)
    try:
        tasks_now = raw.tasks(filters={"service": "chatty", "desired-state": "running"})
        data = b"".join(raw.service_logs("chatty", details=True, stdout=True, tail=1))
    finally:
        raw.close()
    for task in tasks_now:
        assert (f"com.docker.swarm.node.id={task['NodeID']},com.docker.swarm.service.id={task['ServiceID']},"
                f"com.docker.swarm.task.id={task['ID']} second").encode() in data, data
    dd.out("service", "rm", "chatty")
