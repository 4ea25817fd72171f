"""Docker volumes through the real docker CLI and docker-py: create, ls, inspect, rm, prune, restart."""
from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator

import docker
import pytest
from lib.cni_host import InstanceNetwork
from lib.daemon import DaemonProcess, start_daemon


@pytest.fixture(scope="module")
def nw() -> Iterator[DaemonProcess]:
    d = start_daemon()
    yield d
    network = InstanceNetwork.of(d.root, d.base / "net.d")
    d.destroy()
    network.remove()


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
    assert missing.returncode != 0 and "get nosuch: no such volume" in missing.stderr
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


def test_volumes_survive_restart(nw: DaemonProcess) -> None:
    cli(nw, "volume", "create", "--label", "keep=yes", "-o", "type=tmpfs", "-o", "device=tmpfs", "-o", "o=size=1m",
        "restart-v")
    nw.stop()
    nw.start()
    [info] = json.loads(cli(nw, "volume", "inspect", "restart-v").stdout)
    assert info["Labels"] == {"keep": "yes"}
    assert info["Options"] == {"type": "tmpfs", "device": "tmpfs", "o": "size=1m"}
    cli(nw, "volume", "rm", "restart-v")


def test_volume_events(nw: DaemonProcess) -> None:
    since = str(int(time.time()) - 1)
    cli(nw, "volume", "create", "ev-vol")
    cli(nw, "volume", "rm", "ev-vol")
    until = str(int(time.time()) + 1)
    out = cli(nw, "events", "--since", since, "--until", until, "--filter", "type=volume",
              "--format", "{{.Action}} {{.Actor.ID}} {{.Actor.Attributes.driver}}").stdout.splitlines()
    assert [line for line in out if " ev-vol " in line] == ["create ev-vol local", "destroy ev-vol local"]
