"""The everyday workflow with the real docker CLI against one narwhald (docker.io mirrored locally).

Each test is one slice of what a platform engineer types in a day: the commands, their exit codes and
their output.  Slices whose feature has not landed yet are strict xfails, so the file stays green and
flips (XPASS fails) as soon as the feature works: then drop the mark.
"""
from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from lib import dockerpy
from lib.daemon import DaemonProcess, free_port
from lib.registry import Registry
from lib.wait import wait_for

DOCKER = "/usr/local/bin/docker"


class Docker:
    def __init__(self, daemon: DaemonProcess) -> None:
        self.daemon = daemon
        self.env = daemon.docker_env()

    def run(self, *args: str, input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([DOCKER, *args], env=self.env, input=input, capture_output=True, text=True,
                              timeout=timeout)

    def ok(self, *args: str, input: str | None = None, timeout: float = 60) -> str:
        """Run and insist on exit 0; return stdout."""
        p = self.run(*args, input=input, timeout=timeout)
        assert p.returncode == 0, f"docker {' '.join(args)} -> {p.returncode}\n{p.stdout}\n{p.stderr}"
        return p.stdout

    def tty(self, command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run a docker command line under a pseudo-terminal (for -it), via util-linux script(1)."""
        return subprocess.run(["script", "-qec", f"{DOCKER} {command}", "/dev/null"], env=self.env,
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def docker(registry: Registry) -> Iterator[Docker]:
    dockerpy.seed_registry(registry.host, ["library/busybox:latest"])
    with dockerpy.docker_daemon(registry.host) as daemon:
        cli = Docker(daemon)
        cli.ok("pull", "busybox")
        yield cli


def test_version_and_info(docker: Docker) -> None:
    out = docker.ok("version")
    assert "Server: Narwhal Engine" in out and "API version:      1.53" in out
    p = docker.run("info")
    assert p.returncode == 0, p.stderr
    assert "ERROR" not in p.stdout and "errors pretty printing info" not in p.stderr
    assert "Storage Driver: overlayfs" in p.stdout
    assert "Cgroup Driver: cgroupfs" in p.stdout
    assert f"Docker Root Dir: {docker.daemon.root / 'docker'}" in p.stdout
    info = json.loads(docker.ok("info", "--format", "{{json .}}"))
    assert info["OSType"] == "linux" and info["Swarm"]["LocalNodeState"] == "inactive"


def test_pull_images_tag_push_rmi(docker: Docker, registry: Registry) -> None:
    out = docker.ok("pull", "busybox:latest")
    assert "docker.io/library/busybox:latest" in out
    listed = docker.ok("images", "--format", "{{.Repository}}:{{.Tag}}")
    assert "busybox:latest" in listed.split()
    target = f"{registry.host}/workflow/bb:v1"
    docker.ok("tag", "busybox", target)
    assert target in docker.ok("images", "--format", "{{.Repository}}:{{.Tag}}").split()
    pushed = docker.ok("push", target)
    assert "v1: digest: sha256:" in pushed
    untagged = docker.ok("rmi", target)
    assert f"Untagged: {target}" in untagged
    assert target not in docker.ok("images", "--format", "{{.Repository}}:{{.Tag}}").split()
    # What was pushed pulls back.
    docker.ok("pull", target)
    docker.ok("rmi", target)
    missing = docker.run("rmi", "nosuch-image:nope")
    assert missing.returncode == 1 and "No such image: nosuch-image:nope" in missing.stderr


def test_save_and_load(docker: Docker, tmp_path: Path) -> None:
    archive = tmp_path / "bb.tar"
    docker.ok("tag", "busybox", "workflow/saved:1")
    docker.ok("save", "-o", str(archive), "workflow/saved:1")
    assert archive.stat().st_size > 0
    docker.ok("rmi", "workflow/saved:1")
    out = docker.ok("load", "-i", str(archive))
    assert "Loaded image: workflow/saved:1" in out
    docker.ok("rmi", "workflow/saved:1")


def test_run_detached_ps_logs_exec_inspect_stop_restart_rm(docker: Docker) -> None:
    cid = docker.ok("run", "-d", "--name", "wf-web", "-e", "FOO=bar", "busybox",
                    "sh", "-c", "echo hello; echo FOO=$FOO; exec sleep 300").strip()
    assert len(cid) == 64
    try:
        assert "wf-web" in docker.ok("ps", "--format", "{{.Names}}").split()
        wait_for(lambda: "FOO=bar" in docker.ok("logs", "wf-web"))
        assert docker.ok("logs", "wf-web").splitlines() == ["hello", "FOO=bar"]
        assert docker.ok("exec", "wf-web", "echo", "from-exec") == "from-exec\n"
        failed = docker.run("exec", "wf-web", "sh", "-c", "exit 7")
        assert failed.returncode == 7
        assert docker.ok("inspect", "-f", "{{.State.Running}} {{.Name}}", "wf-web").strip() == "true /wf-web"
        started = docker.ok("inspect", "-f", "{{.State.StartedAt}}", "wf-web")
        docker.ok("stop", "-t", "1", "wf-web")
        assert docker.ok("inspect", "-f", "{{.State.Status}}", "wf-web").strip() == "exited"
        assert "wf-web" not in docker.ok("ps", "--format", "{{.Names}}").split()
        assert "wf-web" in docker.ok("ps", "-a", "--format", "{{.Names}}").split()
        docker.ok("restart", "-t", "1", "wf-web")
        assert docker.ok("inspect", "-f", "{{.State.Status}}", "wf-web").strip() == "running"
        assert docker.ok("inspect", "-f", "{{.State.StartedAt}}", "wf-web") != started
        conflict = docker.run("rm", "wf-web")
        assert conflict.returncode == 1 and "cannot remove" in conflict.stderr.lower()
    finally:
        docker.run("rm", "-f", "wf-web")
    assert "wf-web" not in docker.ok("ps", "-a", "--format", "{{.Names}}").split()
    gone = docker.run("inspect", "wf-web")
    assert gone.returncode == 1 and "No such object: wf-web" in gone.stderr


def test_run_rm_attached_exit_code_and_follow_logs(docker: Docker) -> None:
    assert docker.ok("run", "--rm", "busybox", "echo", "hi there") == "hi there\n"
    p = docker.run("run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (p.returncode, p.stdout, p.stderr) == (3, "out\n", "err\n")
    assert docker.ok("ps", "-aq") == ""  # --rm removed both
    docker.ok("run", "-d", "--name", "wf-follow", "busybox", "sh", "-c", "for i in 1 2 3; do echo $i; sleep 0.2; done")
    try:
        # logs -f ends when the container exits.
        assert docker.ok("logs", "-f", "wf-follow", timeout=30).split() == ["1", "2", "3"]
    finally:
        docker.run("rm", "-f", "wf-follow")


def test_run_interactive_tty(docker: Docker) -> None:
    p = docker.tty("run -it --rm busybox sh -c 'tty; echo in-tty; exit 5'")
    assert p.returncode == 5, p.stdout + p.stderr
    assert "/dev/pts/0" in p.stdout and "in-tty" in p.stdout
    piped = docker.run("run", "-i", "--rm", "busybox", "cat", input="through stdin\n")
    assert piped.stdout == "through stdin\n"


def test_publish_port_and_bind_mount(docker: Docker, tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("hello from the host dir\n")
    port = free_port()
    docker.ok("run", "-d", "--name", "wf-httpd", "-p", f"127.0.0.1:{port}:8080", "-v", f"{site}:/www:ro",
              "busybox", "httpd", "-f", "-p", "8080", "-h", "/www")
    try:
        assert docker.ok("port", "wf-httpd").strip() == f"8080/tcp -> 127.0.0.1:{port}"

        def served() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=2) as r:
                    return bool(r.read() == b"hello from the host dir\n")
            except OSError:
                return False

        wait_for(served)
        ro = docker.run("exec", "wf-httpd", "touch", "/www/new")
        assert ro.returncode != 0 and "Read-only file system" in ro.stderr
    finally:
        docker.run("rm", "-f", "wf-httpd")


def test_volumes(docker: Docker) -> None:
    assert docker.ok("volume", "create", "wf-vol").strip() == "wf-vol"
    try:
        docker.ok("run", "--rm", "-v", "wf-vol:/data", "busybox", "sh", "-c", "echo kept > /data/f")
        assert docker.ok("run", "--rm", "-v", "wf-vol:/data", "busybox", "cat", "/data/f") == "kept\n"
        assert "wf-vol" in docker.ok("volume", "ls", "-q").split()
        assert docker.ok("volume", "inspect", "-f", "{{.Driver}}", "wf-vol").strip() == "local"
    finally:
        docker.run("volume", "rm", "wf-vol")
    assert "wf-vol" not in docker.ok("volume", "ls", "-q").split()


def test_networks_and_dns(docker: Docker) -> None:
    docker.ok("network", "create", "wf-net")
    try:
        assert "wf-net" in docker.ok("network", "ls", "--format", "{{.Name}}").split()
        docker.ok("run", "-d", "--name", "wf-srv", "--network", "wf-net", "busybox", "sleep", "300")
        out = docker.ok("run", "--rm", "--network", "wf-net", "busybox", "ping", "-c", "1", "-W", "5", "wf-srv")
        assert "1 packets received" in out
        inspected = json.loads(docker.ok("network", "inspect", "wf-net"))
        assert [c["Name"] for c in inspected[0]["Containers"].values()] == ["wf-srv"]
    finally:
        docker.run("rm", "-f", "wf-srv")
        docker.run("network", "rm", "wf-net")
    assert "wf-net" not in docker.ok("network", "ls", "--format", "{{.Name}}").split()


def test_cp(docker: Docker, tmp_path: Path) -> None:
    docker.ok("run", "-d", "--name", "wf-cp", "busybox", "sleep", "300")
    try:
        src = tmp_path / "in.txt"
        src.write_text("copied in\n")
        docker.ok("cp", str(src), "wf-cp:/tmp/in.txt")
        assert docker.ok("exec", "wf-cp", "cat", "/tmp/in.txt") == "copied in\n"
        docker.ok("exec", "wf-cp", "sh", "-c", "echo made inside > /tmp/out.txt")
        docker.ok("cp", "wf-cp:/tmp/out.txt", str(tmp_path / "out.txt"))
        assert (tmp_path / "out.txt").read_text() == "made inside\n"
    finally:
        docker.run("rm", "-f", "wf-cp")


def test_stats_top(docker: Docker) -> None:
    docker.ok("run", "-d", "--name", "wf-box", "busybox", "sleep", "300")
    try:
        stats = json.loads(docker.ok("stats", "--no-stream", "--format", "{{json .}}", "wf-box").splitlines()[0])
        assert stats["Name"] == "wf-box" and stats["MemUsage"]
        top = docker.ok("top", "wf-box")
        assert "sleep 300" in top and top.splitlines()[0].split()[:2] == ["UID", "PID"]
    finally:
        docker.run("rm", "-f", "wf-box")


def test_events(docker: Docker) -> None:
    since = str(int(time.time()) - 1)
    docker.ok("run", "--rm", "--name", "wf-evt", "busybox", "true")
    until = str(int(time.time()) + 1)
    out = docker.ok("events", "--since", since, "--until", until, "--filter", "container=wf-evt",
                    "--format", "{{.Type}} {{.Action}}")
    actions = out.split("\n")
    for expected in ("container create", "container start", "container die", "container destroy"):
        assert expected in actions


def test_system_df(docker: Docker) -> None:
    docker.ok("create", "--name", "wf-stopped", "busybox", "true")
    try:
        df = docker.ok("system", "df")
        assert df.splitlines()[0].split()[:2] == ["TYPE", "TOTAL"]
        rows = {line.split()[0]: line.split()[1] for line in df.splitlines()[1:] if line.strip()}
        assert int(rows["Images"]) >= 1 and int(rows["Containers"]) >= 1
        assert "Build Cache" in df
        verbose = docker.ok("system", "df", "-v")
        assert "wf-stopped" in verbose and "busybox" in verbose
    finally:
        docker.run("rm", "-f", "wf-stopped")


def test_prune(docker: Docker) -> None:
    docker.ok("create", "--name", "wf-pruned", "busybox", "true")
    pruned = docker.ok("container", "prune", "-f")
    assert "Total reclaimed space" in pruned
    assert "wf-pruned" not in docker.ok("ps", "-a", "--format", "{{.Names}}").split()
    assert "Total reclaimed space" in docker.ok("system", "prune", "-f")
