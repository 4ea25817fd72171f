"""Docker containers through the real docker CLI: run/ps/inspect, the lifecycle verbs, restart policies
(also across a kill -9 of narwhald), network modes, errors, and no leaks once everything is removed.

One narwhald for the module (busybox resolves through its docker.io mirror, the session registry);
the tests run in file order and each removes what it made.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from lib.daemon import DaemonProcess, free_port
from lib.docker import DockerDaemon, docker_daemon, eventually
from lib.leaks import leftovers
from lib.registry import Registry


@pytest.fixture(scope="module")
def dockerd(registry: Registry) -> Iterator[DockerDaemon]:
    yield from docker_daemon(registry)


@pytest.fixture
def dd(dockerd: DockerDaemon) -> Iterator[DockerDaemon]:
    yield dockerd
    dockerd.rm_all()


def _http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


def test_run_publish_ps_inspect(dd: DockerDaemon) -> None:
    port = free_port()
    cid = dd.out("run", "-d", "--name", "web", "-p", f"127.0.0.1:{port}:80", "-e", "A=b", "-l", "k=v", "busybox",
                 "sh", "-c", "echo hello-narwhal > /tmp/index.html && exec httpd -f -p 80 -h /tmp")
    assert len(cid) == 64
    assert eventually(lambda: _try_get(f"http://127.0.0.1:{port}/index.html") == "hello-narwhal\n")

    info = dd.inspect("web")
    assert info["Id"] == cid and info["Name"] == "/web"
    assert info["State"]["Status"] == "running" and info["State"]["Running"] and info["State"]["Pid"] > 0
    assert "A=b" in info["Config"]["Env"] and info["Config"]["Labels"] == {"k": "v"}
    assert info["Config"]["Image"] == "busybox" and info["Image"].startswith("sha256:")
    assert info["HostConfig"]["PortBindings"] == {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}
    assert info["NetworkSettings"]["Ports"] == {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}
    bridge = info["NetworkSettings"]["Networks"]["bridge"]
    assert bridge["IPAddress"] and bridge["Gateway"] and bridge["MacAddress"]
    assert dd.inspect(cid[:10])["Id"] == cid  # unique prefix

    dd.out("create", "--name", "idle", "-l", "role=idle", "busybox", "true")
    assert dd.out("ps", "--format", "{{.Names}}").split() == ["web"]
    assert dd.out("ps", "-q") == cid[:12]
    assert set(dd.out("ps", "-a", "--format", "{{.Names}}").split()) == {"web", "idle"}
    assert dd.out("ps", "-a", "--filter", "status=created", "--format", "{{.Names}}") == "idle"
    assert dd.out("ps", "-a", "--filter", "label=k=v", "--format", "{{.Names}}") == "web"
    assert dd.out("ps", "-a", "--filter", "name=idl", "--format", "{{.Names}}") == "idle"
    assert dd.out("ps", "-a", "--filter", "publish=80", "--format", "{{.Names}}") == "web"
    assert dd.out("ps", "-a", "--filter", "ancestor=busybox", "-q").split() == [dd.inspect("idle")["Id"][:12],
                                                                                cid[:12]]
    assert f"127.0.0.1:{port}->80/tcp" in dd.out("ps", "--format", "{{.Ports}}")
    bad = dd.docker("ps", "--filter", "colour=blue", check=False)
    assert bad.returncode != 0 and "invalid filter 'colour'" in bad.stderr
    assert dd.out("ps", "-a", "--filter", "since=web", "--format", "{{.Names}}") == "idle"
    assert dd.out("ps", "-a", "--filter", "before=idle", "--format", "{{.Names}}") == "web"
    assert dd.out("ps", "-a", "-n", "1", "--format", "{{.Names}}") == "idle"

    dd.out("create", "--name", "keepme", "-l", "keep=1", "busybox", "true")
    idle = dd.inspect("idle")["Id"]
    pruned = dd.out("container", "prune", "-f", "--filter", "label!=keep=1")
    assert idle in pruned  # stopped and not labelled keep=1; the running one and the labelled one stay
    assert set(dd.out("ps", "-a", "--format", "{{.Names}}").split()) == {"web", "keepme"}


def _try_get(url: str) -> str | None:
    try:
        return _http_get(url)
    except (urllib.error.URLError, OSError):
        return None


def test_lifecycle_verbs(dd: DockerDaemon) -> None:
    cid = dd.out("run", "-d", "--name", "life", "--stop-timeout", "1", "busybox", "sleep", "1000")
    first_pid = dd.inspect("life")["State"]["Pid"]

    dd.out("stop", "life")
    state = dd.inspect("life")["State"]
    assert state["Status"] == "exited" and not state["Running"] and state["ExitCode"] == 137
    assert dd.out("ps", "-a", "--filter", "exited=137", "-q") == cid[:12]

    dd.out("start", "life")  # the same container gets a new task
    state = dd.inspect("life")["State"]
    assert state["Running"] and state["Pid"] != first_pid
    assert dd.inspect("life")["Id"] == cid

    dd.out("pause", "life")
    assert dd.inspect("life")["State"]["Status"] == "paused"
    assert dd.inspect("life")["State"]["Paused"]
    dd.out("unpause", "life")
    assert dd.inspect("life")["State"]["Status"] == "running"

    before = dd.inspect("life")["State"]["Pid"]
    dd.out("restart", "-t", "1", "life")
    after = dd.inspect("life")["State"]
    assert after["Running"] and after["Pid"] != before

    dd.out("rename", "life", "life2")
    assert dd.inspect("life2")["Id"] == cid
    assert dd.docker("inspect", "life", check=False).returncode != 0

    dd.out("update", "--memory", "64m", "--cpus", "0.5", "--restart", "on-failure:3", "life2")
    host = dd.inspect("life2")["HostConfig"]
    assert host["Memory"] == 64 << 20 and host["NanoCpus"] == 500_000_000
    assert host["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    cgroup = Path("/sys/fs/cgroup/memory") / _cgroup_of(dd.inspect("life2")["State"]["Pid"], "memory")
    assert int((cgroup / "memory.limit_in_bytes").read_text()) == 64 << 20

    dd.out("kill", "-s", "TERM", "life2")  # sleep as PID 1 ignores TERM: still running
    dd.out("kill", "life2")
    assert dd.out("wait", "life2") == "137"
    assert dd.inspect("life2")["State"]["Status"] == "exited"
    assert dd.inspect("life2")["RestartCount"] == 0  # a kill is a manual stop: no restart

    not_running = dd.docker("kill", "life2", check=False)
    assert not_running.returncode != 0 and "is not running" in not_running.stderr

    # The stop signal reaches the process (which exits on its own), also when the container was paused.
    dd.out("run", "-d", "--name", "graceful", "busybox", "sh", "-c",
           "trap 'exit 7' TERM; while true; do sleep 0.1; done")
    dd.out("pause", "graceful")
    dd.out("stop", "-t", "30", "graceful")
    assert dd.inspect("graceful")["State"]["ExitCode"] == 7
    dd.out("run", "-d", "--name", "quitter", "--stop-signal", "USR1", "busybox", "sh", "-c",
           "trap 'exit 9' USR1; while true; do sleep 0.1; done")
    dd.out("stop", "quitter")
    assert dd.inspect("quitter")["State"]["ExitCode"] == 9


def _cgroup_of(pid: int, controller: str) -> str:
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return path.lstrip("/")
    raise AssertionError(f"no {controller} cgroup for {pid}")


def test_run_rm_exit_codes_and_wait(dd: DockerDaemon) -> None:
    assert dd.docker("run", "--rm", "--name", "gone", "busybox", "true").returncode == 0
    assert dd.docker("inspect", "gone", check=False).returncode != 0

    failed = dd.docker("run", "--name", "three", "busybox", "sh", "-c", "echo out; exit 3", check=False)
    assert failed.returncode == 3 and failed.stdout.strip() == "out"
    assert dd.inspect("three")["State"]["ExitCode"] == 3
    assert dd.out("wait", "three") == "3"  # not-running: answers at once

    dd.out("run", "-d", "--name", "later", "busybox", "sh", "-c", "sleep 1; exit 5")
    assert dd.out("wait", "later") == "5"

    limits = dd.out("run", "--rm", "--ulimit", "nofile=1024:2048", "--shm-size", "16m", "--init", "busybox", "sh",
                    "-c", "ulimit -n; ulimit -Hn; df -k /dev/shm | tail -1; cat /proc/1/cmdline | tr '\\0' ' '")
    soft, hard, shm, init = limits.splitlines()
    assert (soft, hard, shm.split()[1]) == ("1024", "2048", "16384")
    assert init.startswith("/sbin/docker-init -- sh")


def test_health_check(dd: DockerDaemon) -> None:
    dd.out("run", "-d", "--name", "hc", "--health-cmd", "test -f /tmp/ok", "--health-interval", "200ms",
           "--health-retries", "2", "busybox", "sh", "-c", "touch /tmp/ok; sleep 3; rm /tmp/ok; sleep 1000")
    assert eventually(lambda: dd.inspect("hc")["State"]["Health"]["Status"] == "healthy")
    assert dd.out("ps", "--filter", "health=healthy", "--format", "{{.Names}} {{.Status}}").endswith("(healthy)")
    assert eventually(lambda: dd.inspect("hc")["State"]["Health"]["Status"] == "unhealthy")
    health = dd.inspect("hc")["State"]["Health"]
    assert health["FailingStreak"] >= 2 and health["Log"][-1]["ExitCode"] == 1


def test_errors(dd: DockerDaemon) -> None:
    missing = dd.docker("rm", "nosuch", check=False)
    assert missing.returncode == 1 and missing.stderr.strip() == "Error response from daemon: No such container: nosuch"

    cid = dd.out("create", "--name", "taken", "busybox", "true")
    dup = dd.docker("create", "--name", "taken", "busybox", "true", check=False)
    assert dup.returncode != 0
    assert f'Conflict. The container name "/taken" is already in use by container "{cid}"' in dup.stderr

    dd.out("run", "-d", "--name", "busy", "busybox", "sleep", "1000")
    refused = dd.docker("rm", "busy", check=False)
    assert refused.returncode != 0 and "stop the container before removing or force remove" in refused.stderr
    assert dd.docker("run", "--rm", "--restart", "always", "busybox", "true", check=False).returncode != 0
    assert "Invalid container name" in dd.docker("create", "--name", "a b", "busybox", check=False).stderr
    assert dd.docker("run", "--rm", "busybox", "/no/such/binary", check=False).returncode != 0


def test_mounts_volumes_and_tmpfs(dd: DockerDaemon, tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("from-host\n")
    out = dd.out("run", "--rm", "-v", f"{tmp_path}:/host:ro", "-v", "named:/data", "-v", "/anon",
                 "--tmpfs", "/scratch:size=1m", "busybox", "sh", "-c",
                 "cat /host/in.txt; echo kept > /data/f; grep -c ' /scratch tmpfs ' /proc/mounts; "
                 "touch /host/x 2>/dev/null || echo read-only")
    assert out.split() == ["from-host", "1", "read-only"]
    assert dd.out("run", "--rm", "-v", "named:/data", "busybox", "cat", "/data/f") == "kept"
    assert dd.out("volume", "ls", "-q").split() == ["named"]  # --rm took the anonymous volume along

    dd.out("create", "--name", "vols", "-v", "named:/data", "--mount", "type=tmpfs,destination=/t", "busybox")
    mounts = {m["Destination"]: m for m in dd.inspect("vols")["Mounts"]}
    assert mounts["/data"]["Type"] == "volume" and mounts["/data"]["Name"] == "named"
    assert mounts["/t"]["Type"] == "tmpfs"
    in_use = dd.docker("volume", "rm", "named", check=False)
    assert in_use.returncode != 0 and "in use" in in_use.stderr
    assert dd.out("ps", "-a", "--filter", "volume=named", "--format", "{{.Names}}") == "vols"
    dd.out("rm", "vols")
    dd.out("volume", "rm", "named")


def test_network_modes(dd: DockerDaemon) -> None:
    host = dd.out("run", "--rm", "--network", "host", "busybox", "hostname")
    assert host == os.uname().nodename
    namespaces = dd.out("run", "--rm", "--pid", "host", "--ipc", "host", "busybox", "sh", "-c",
                        "readlink /proc/self/ns/pid; readlink /proc/self/ns/ipc")
    assert namespaces.split() == [os.readlink("/proc/self/ns/pid"), os.readlink("/proc/self/ns/ipc")]
    links = dd.out("run", "--rm", "--network", "none", "busybox", "ip", "-o", "link")
    assert [line.split(":")[1].strip() for line in links.splitlines()] == ["lo"]

    dd.out("run", "-d", "--name", "base", "busybox", "sleep", "1000")
    base = dd.inspect("base")
    ip = base["NetworkSettings"]["IPAddress"]
    shared = dd.out("run", "--rm", "--network", "container:base", "busybox", "ip", "-o", "-4", "addr")
    assert ip and f"inet {ip}/" in shared
    assert dd.inspect("base")["NetworkSettings"]["IPAddress"] == ip
    dd.out("stop", "-t", "0", "base")
    refused = dd.docker("run", "--rm", "--network", "container:base", "busybox", "true", check=False)
    assert refused.returncode != 0 and "cannot join network of a non running container" in refused.stderr


def test_restart_policy_survives_daemon_kill(dd: DockerDaemon) -> None:
    cid = dd.out("run", "-d", "--name", "phoenix", "--restart", "always", "busybox", "sleep", "1000")
    os.kill(dd.inspect("phoenix")["State"]["Pid"], signal.SIGKILL)
    assert eventually(lambda: _running_with_restarts(dd, "phoenix", 1))

    dd.out("run", "-d", "--name", "once", "--restart", "on-failure:1", "busybox", "sh", "-c", "exit 1")
    assert eventually(lambda: dd.inspect("once")["RestartCount"] == 1 and
                      dd.inspect("once")["State"]["Status"] == "exited")

    # Two containers whose create / remove a crash cuts short: one loses its record (the create died before
    # writing it), the other is left marked REMOVING.  Recovery removes both, every piece.
    half = dd.out("run", "-d", "--name", "half", "-p", "80", "-v", "halfvol:/data", "busybox", "sleep", "1000")
    going = dd.out("create", "--name", "going", "busybox", "true")
    half_sandbox = dd.inspect("half")["NetworkSettings"]["SandboxID"]

    d = dd.daemon
    d.kill9()
    engine_dir = d.root / "docker" / "engine"
    (engine_dir / half / "record.json").unlink()
    record = json.loads((engine_dir / going / "record.json").read_text())
    record["state"]["extra"] = "removing"
    (engine_dir / going / "record.json").write_text(json.dumps(record))
    pid = _pid_of(d, cid)
    os.kill(pid, signal.SIGKILL)  # dies while narwhald is down
    d.start()
    assert eventually(lambda: _running_with_restarts(dd, "phoenix", 2))
    assert dd.inspect("phoenix")["Id"] == cid
    assert dd.inspect("once")["RestartCount"] == 1
    assert set(dd.out("ps", "-a", "--format", "{{.Names}}").split()) == {"phoenix", "once"}
    core = _ctr(d, "containers", "ls", "-q").split()
    assert half not in core and going not in core and half_sandbox not in core
    assert not (d.state / "netns" / half_sandbox).exists()
    assert sorted(p.name for p in engine_dir.iterdir()) == sorted([cid, dd.inspect("once")["Id"]])
    dd.out("volume", "rm", "halfvol")  # no longer held by the removed half-created container


def _running_with_restarts(dd: DockerDaemon, name: str, count: int) -> bool:
    info = dd.inspect(name)
    return bool(info["State"]["Running"]) and info["RestartCount"] >= count


def _ctr(d: DaemonProcess, *args: str) -> str:
    sock = d.state / "containerd" / "containerd.sock"
    return subprocess.run(["ctr", "--address", str(sock), "-n", "narwhal-docker", *args],
                          capture_output=True, text=True, check=True).stdout


def _pid_of(d: DaemonProcess, container_id: str) -> int:
    out = _ctr(d, "tasks", "ls")
    for line in out.splitlines()[1:]:
        fields = line.split()
        if fields[0] == container_id:
            return int(fields[1])
    raise AssertionError(f"no task for {container_id}")


def test_nothing_leaks_after_removal(dockerd: DockerDaemon) -> None:
    dockerd.out("run", "-d", "--name", "leaky", "-p", "80", "busybox", "sleep", "1000")
    dockerd.out("create", "--name", "never", "busybox", "true")
    dockerd.rm_all()
    assert dockerd.out("ps", "-aq") == ""
    d = dockerd.daemon
    assert leftovers(d) == {}
    assert _ctr(d, "containers", "ls", "-q").split() == []
    assert _ctr(d, "tasks", "ls", "-q").split() == []
    engine_dir = d.root / "docker" / "engine"
    assert not engine_dir.exists() or list(engine_dir.iterdir()) == []
    assert json.loads(dockerd.out("inspect", "--type", "image", "busybox"))  # the image stays
