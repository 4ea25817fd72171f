"""Docker volumes through the real docker CLI and docker-py: create, ls, inspect, rm, prune, events, restart;
and in containers: data shared through a named volume, copy-up from the image, in-use refusal, read-only binds,
anonymous volumes removed by ``docker rm -v``, docker cp into a volume of a stopped container, inspect's
Mounts, and a tmpfs-backed volume mounted only while used.  One narwhald (busybox via its docker.io mirror)."""
from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from lib.daemon import DaemonProcess
from lib.docker import DockerDaemon, docker_daemon
from lib.registry import Registry


@pytest.fixture(scope="module")
def dd(registry: Registry) -> Iterator[DockerDaemon]:
    for d in docker_daemon(registry):
        yield d
        d.rm_all()


@pytest.fixture
def nw(dd: DockerDaemon) -> DaemonProcess:
    return dd.daemon


def cli(d: DaemonProcess, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["docker", *args], env=d.docker_env(), capture_output=True, text=True, timeout=60)
    if ok:
        assert result.returncode == 0, result.stderr
    return result


def test_cli_volume_lifecycle(nw: DaemonProcess) -> None:
    assert cli(nw, "volume", "create", "--label", "team=a", "cli-v1").stdout.strip() == "cli-v1"
    assert cli(nw, "volume", "create", "cli-v1").stdout.strip() == "cli-v1"  # idempotent
    cli(nw, "volume", "create", "cli-v2")
    listed = cli(nw, "volume", "ls", "--format", "{{.Driver}} {{.Name}}").stdout.split("\n")
    assert "local cli-v1" in listed and "local cli-v2" in listed
    assert cli(nw, "volume", "ls", "-q", "-f", "label=team=a").stdout.split() == ["cli-v1"]
    assert cli(nw, "volume", "ls", "-q", "-f", "name=cli-v2").stdout.split() == ["cli-v2"]
    [info] = json.loads(cli(nw, "volume", "inspect", "cli-v1").stdout)
    assert info["Name"] == "cli-v1" and info["Driver"] == "local" and info["Scope"] == "local"
    assert info["Labels"] == {"team": "a"}
    assert info["Mountpoint"] == str(nw.root / "docker" / "volumes" / "cli-v1" / "_data")
    assert cli(nw, "volume", "rm", "cli-v1", "cli-v2").stdout.split() == ["cli-v1", "cli-v2"]
    assert "cli-v1" not in cli(nw, "volume", "ls", "-q").stdout.split()


def test_cli_errors(nw: DaemonProcess) -> None:
    missing = cli(nw, "volume", "rm", "nosuch", ok=False)
    assert missing.returncode != 0
    assert missing.stderr.strip() == "Error response from daemon: get nosuch: no such volume"
    bad = cli(nw, "volume", "create", "bad/name", ok=False)
    assert bad.returncode != 0 and "includes invalid characters for a local volume name" in bad.stderr
    opt = cli(nw, "volume", "create", "-o", "nosuch=1", "badopt", ok=False)
    assert opt.returncode != 0 and "invalid option: " in opt.stderr and "nosuch" in opt.stderr
    cli(nw, "volume", "rm", "-f", "nosuch")  # force: a missing volume is fine


def test_prune_anonymous_only_unless_all(nw: DaemonProcess) -> None:
    client = docker.DockerClient(base_url=f"unix://{nw.docker_socket}")
    try:
        named = client.volumes.create("prune-named", labels={"p": "1"})
        anonymous = client.api.create_volume()  # no name: an anonymous volume
        assert anonymous["Labels"] == {"com.docker.volume.anonymous": ""}
        report = client.volumes.prune()
        assert anonymous["Name"] in report["VolumesDeleted"] and named.name not in report["VolumesDeleted"]
        report = client.volumes.prune(filters={"label": "p=2", "all": "true"})
        assert named.name not in report["VolumesDeleted"]
        assert client.volumes.get("prune-named").attrs["Labels"] == {"p": "1"}
        assert "prune-named" in cli(nw, "volume", "prune", "-af").stdout
        with pytest.raises(docker.errors.NotFound):
            client.volumes.get("prune-named")
        # API 1.41: prune removed every unused volume.
        client.volumes.create("prune-old")
        old = docker.APIClient(base_url=f"unix://{nw.docker_socket}", version="1.41")
        try:
            assert "prune-old" in old.prune_volumes()["VolumesDeleted"]
        finally:
            old.close()
    finally:
        client.close()


def test_volume_events(nw: DaemonProcess) -> None:
    since = str(int(time.time()) - 1)
    cli(nw, "volume", "create", "ev-vol")
    cli(nw, "volume", "rm", "ev-vol")
    until = str(int(time.time()) + 1)
    out = cli(nw, "events", "--since", since, "--until", until, "--filter", "type=volume",
              "--format", "{{.Action}} {{.Actor.ID}} {{.Actor.Attributes.driver}}").stdout.splitlines()
    assert [line for line in out if " ev-vol " in line] == ["create ev-vol local", "destroy ev-vol local"]


def _volumes(dd: DockerDaemon) -> set[str]:
    return set(dd.out("volume", "ls", "-q").split())


def test_named_volume_shared_between_containers(dd: DockerDaemon) -> None:
    dd.out("volume", "create", "shared")
    dd.out("run", "--rm", "-v", "shared:/data", "busybox", "sh", "-c", "echo x > /data/f")
    assert dd.out("run", "--rm", "-v", "shared:/data:ro", "busybox", "cat", "/data/f") == "x"
    ro = dd.docker("run", "--rm", "-v", "shared:/data:ro", "busybox", "sh", "-c", "echo y > /data/f", check=False)
    assert ro.returncode != 0

    holder = dd.out("create", "--name", "holder", "-v", "shared:/data", "busybox", "true")
    busy = dd.docker("volume", "rm", "shared", check=False)
    assert busy.returncode != 0 and f"remove shared: volume is in use - [{holder}]" in busy.stderr
    [mount] = dd.inspect("holder")["Mounts"]
    assert mount == {"Type": "volume", "Name": "shared", "Source": str(dd.daemon.root / "docker" / "volumes" /
                                                                         "shared" / "_data"),
                     "Destination": "/data", "Driver": "local", "Mode": "", "RW": True, "Propagation": ""}
    dd.out("rm", "holder")
    dd.out("volume", "rm", "shared")


def test_first_use_creates_and_seeds_from_the_image(dd: DockerDaemon) -> None:
    # A named volume mounted over a populated image dir starts as a copy of it (Docker's copy-up).
    assert "passwd" in dd.out("run", "--rm", "-v", "seeded:/etc", "busybox", "ls", "/etc").split()
    assert "seeded" in _volumes(dd)
    assert "root:x:0:0" in dd.out("run", "--rm", "-v", "seeded:/data", "busybox", "cat", "/data/passwd")
    dd.out("run", "--rm", "-v", "seeded:/data", "busybox", "rm", "/data/passwd")
    # Not empty any more: not seeded again.
    assert "passwd" not in dd.out("run", "--rm", "-v", "seeded:/etc", "busybox", "ls", "/etc").split()
    dd.out("volume", "rm", "seeded")


def test_read_only_bind(dd: DockerDaemon, tmp_path: Path) -> None:
    (tmp_path / "hello").write_text("from the host\n")
    assert dd.out("run", "--rm", "-v", f"{tmp_path}:/mnt:ro", "busybox", "cat", "/mnt/hello") == "from the host"
    denied = dd.docker("run", "--rm", "-v", f"{tmp_path}:/mnt:ro", "busybox", "touch", "/mnt/x", check=False)
    assert denied.returncode != 0 and not (tmp_path / "x").exists()
    dd.out("run", "--rm", "-v", f"{tmp_path}:/mnt", "busybox", "touch", "/mnt/written")
    assert (tmp_path / "written").exists()
    dd.out("create", "--name", "binder", "-v", f"{tmp_path}:/mnt:ro", "busybox", "true")
    [mount] = dd.inspect("binder")["Mounts"]
    assert mount == {"Type": "bind", "Source": str(tmp_path), "Destination": "/mnt", "Mode": "ro", "RW": False,
                     "Propagation": "rprivate"}
    dd.out("rm", "binder")


def test_anonymous_volumes_go_with_rm_v(dd: DockerDaemon) -> None:
    before = _volumes(dd)
    dd.out("create", "--name", "anon", "--mount", "type=volume,dst=/x", "-v", "/y", "-v", "kept:/z", "busybox", "true")
    mounts = {m["Destination"]: m for m in dd.inspect("anon")["Mounts"]}
    assert set(mounts) == {"/x", "/y", "/z"}
    anonymous = {mounts["/x"]["Name"], mounts["/y"]["Name"]}
    assert all(re.fullmatch("[0-9a-f]{64}", name) for name in anonymous)
    assert _volumes(dd) - before == anonymous | {"kept"}
    dd.out("rm", "-v", "anon")
    assert _volumes(dd) - before == {"kept"}  # named volumes stay
    dd.out("volume", "rm", "kept")


def test_docker_cp_lands_in_the_volume_of_a_stopped_container(dd: DockerDaemon, tmp_path: Path) -> None:
    dd.out("create", "--name", "cpvol", "-v", "cpdata:/data", "busybox", "true")
    (tmp_path / "file.txt").write_text("into the volume\n")
    dd.out("cp", str(tmp_path / "file.txt"), "cpvol:/data/")
    assert dd.out("run", "--rm", "-v", "cpdata:/d", "busybox", "cat", "/d/file.txt") == "into the volume"
    dd.out("rm", "-v", "cpvol")
    dd.out("volume", "rm", "cpdata")


def test_tmpfs_volume_is_mounted_only_while_used(dd: DockerDaemon) -> None:
    dd.out("volume", "create", "-o", "type=tmpfs", "-o", "device=tmpfs", "-o", "o=size=2m", "scratch")
    [info] = json.loads(dd.out("volume", "inspect", "scratch"))
    data = info["Mountpoint"]

    def mounted() -> bool:
        return any(line.split()[4] == data for line in Path("/proc/self/mountinfo").read_text().splitlines())

    assert not mounted()
    dd.out("create", "--name", "tmpuser", "-v", "scratch:/scratch", "busybox", "sh", "-c",
           "df -k /scratch | tail -1")
    assert mounted()
    assert dd.out("start", "-a", "tmpuser").split()[1] == "2048"  # the volume's own 2 MiB tmpfs
    dd.out("rm", "tmpuser")
    assert not mounted()
    dd.out("volume", "rm", "scratch")


def test_volumes_survive_restart(nw: DaemonProcess) -> None:
    cli(nw, "volume", "create", "--label", "keep=yes", "-o", "type=tmpfs", "-o", "device=tmpfs", "-o", "o=size=1m",
        "restart-v")
    nw.stop()
    nw.start()
    [info] = json.loads(cli(nw, "volume", "inspect", "restart-v").stdout)
    assert info["Labels"] == {"keep": "yes"}
    assert info["Options"] == {"type": "tmpfs", "device": "tmpfs", "o": "size=1m"}
    cli(nw, "volume", "rm", "restart-v")
