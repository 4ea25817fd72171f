"""Defaults moby applies, through the real docker CLI and docker-py: HOSTNAME/PATH/TERM, /etc/hosts and
/etc/resolv.conf as moby writes them, the image's own HEALTHCHECK, health state and exec records across a
narwhald restart, and TTY logs byte for byte.

The module's narwhald is restarted by one test (containers keep running meanwhile); each test removes
what it made.
"""
from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import docker
import mkimage
import pytest
from lib.docker import DockerDaemon, docker_daemon, eventually
from lib.leaks import leftovers
from lib.registry import Registry

HEALTHY_IMAGE = "library/hcbox:latest"  # busybox whose config has a HEALTHCHECK


def _push_healthcheck_image(registry_host: str) -> None:
    base = mkimage.build("busybox")
    config = json.loads(base.config.data)
    config["config"]["Healthcheck"] = {"Test": ["CMD-SHELL", "test -e /tmp/ok"], "Interval": 200_000_000,
                                       "Timeout": 2_000_000_000, "Retries": 2}
    config_blob = mkimage.Blob(base.config.media_type, json.dumps(config, sort_keys=True).encode())
    manifest = json.loads(base.manifest.data)
    manifest["config"] = config_blob.descriptor()
    manifest_blob = mkimage.Blob(base.manifest.media_type, json.dumps(manifest).encode())
    image = mkimage.Image(config_blob, base.layers, manifest_blob, base.diff_ids)
    repo, _, tag = HEALTHY_IMAGE.rpartition(":")
    mkimage.RegistryClient(registry_host).push_image(repo, tag, image)


@pytest.fixture(scope="module")
def dockerd(registry: Registry) -> Iterator[DockerDaemon]:
    _push_healthcheck_image(registry.host)
    yield from docker_daemon(registry)


@pytest.fixture
def dd(dockerd: DockerDaemon) -> Iterator[DockerDaemon]:
    yield dockerd
    dockerd.rm_all()
    dockerd.docker("network", "prune", "-f", check=False)


def _env(dd: DockerDaemon, *args: str) -> dict[str, str]:
    out = dd.out("run", *args, "busybox", "env")
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def test_process_environment(dd: DockerDaemon) -> None:
    env = _env(dd, "--name", "envc")
    assert len(env["HOSTNAME"]) == 12 and env["PATH"].startswith("/usr/local/sbin") and "TERM" not in env
    assert _env(dd, "-h", "myhost")["HOSTNAME"] == "myhost"
    assert _env(dd, "-t")["TERM"] == "xterm"
    assert _env(dd, "-e", "HOSTNAME=mine")["HOSTNAME"] == "mine"  # the container's own env wins


def test_etc_hosts_as_moby_writes_it(dd: DockerDaemon) -> None:
    dd.out("run", "-d", "--name", "hosts", "-h", "web", "--domainname", "example.com", "--add-host",
           "db:10.1.2.3", "--add-host", "host.docker.internal:host-gateway", "busybox", "sleep", "60")
    settings = dd.inspect("hosts")["NetworkSettings"]
    ip, gateway = settings["IPAddress"], settings["Gateway"]
    assert dd.out("exec", "hosts", "cat", "/etc/hosts").splitlines() == [
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        "fe00::0\tip6-localnet",
        "ff00::0\tip6-mcastprefix",
        "ff02::1\tip6-allnodes",
        "ff02::2\tip6-allrouters",
        "10.1.2.3\tdb",
        f"{gateway}\thost.docker.internal",
        f"{ip}\tweb.example.com web",
    ]
    none = dd.out("run", "--network", "none", "busybox", "cat", "/etc/hosts").splitlines()
    assert none[0] == "127.0.0.1\tlocalhost" and len(none) == 6  # no address, no hostname line


def _expected_resolv(host_file: Path = Path("/etc/resolv.conf")) -> tuple[list[str], list[str], list[str]]:
    servers, searches, options = [], [], []
    for line in host_file.read_text().splitlines():
        fields = line.split()
        if fields[:1] == ["nameserver"] and not fields[1].startswith(("127.", "::1")):
            servers.append(fields[1])
        elif fields[:1] in (["search"], ["domain"]):
            searches = fields[1:]
        elif fields[:1] == ["options"]:
            options += fields[1:]
    return servers or ["8.8.8.8", "8.8.4.4"], searches, options


def test_resolv_conf_as_moby_writes_it(dd: DockerDaemon) -> None:
    servers, searches, options = _expected_resolv()
    lines = dd.out("run", "busybox", "cat", "/etc/resolv.conf").splitlines()
    assert [line.split()[1] for line in lines if line.startswith("nameserver")] == servers
    assert next((line.split()[1:] for line in lines if line.startswith("search")), []) == searches
    assert next((line.split()[1:] for line in lines if line.startswith("options")), []) == options
    given = dd.out("run", "--dns", "192.0.2.53", "--dns-search", "corp.example", "busybox",
                   "cat", "/etc/resolv.conf").splitlines()
    assert "nameserver 192.0.2.53" in given and "search corp.example" in given
    assert not any(line.startswith("nameserver") and "192.0.2.53" not in line for line in given)


def test_the_images_healthcheck_is_used(dd: DockerDaemon) -> None:
    dd.out("pull", "hcbox")
    dd.out("run", "-d", "--name", "hc", "hcbox", "sh", "-c", "touch /tmp/ok; sleep 120")
    info = dd.inspect("hc")
    assert info["Config"]["Healthcheck"] == {"Test": ["CMD-SHELL", "test -e /tmp/ok"], "Interval": 200_000_000,
                                             "Timeout": 2_000_000_000, "Retries": 2, "StartPeriod": 0}
    assert eventually(lambda: dd.inspect("hc")["State"].get("Health", {}).get("Status") == "healthy")
    # One option of the request's own, the rest from the image (moby's merge).
    dd.out("create", "--name", "hc2", "--health-retries", "7", "hcbox", "true")
    merged = dd.inspect("hc2")["Config"]["Healthcheck"]
    assert merged["Retries"] == 7 and merged["Test"] == ["CMD-SHELL", "test -e /tmp/ok"]
    dd.out("run", "-d", "--name", "hc3", "--no-healthcheck", "hcbox", "sleep", "60")
    assert dd.inspect("hc3")["Config"]["Healthcheck"]["Test"] == ["NONE"]
    assert "Health" not in dd.inspect("hc3")["State"]


def test_tty_logs_are_the_bytes_the_terminal_got(dd: DockerDaemon) -> None:
    # A prompt-like unterminated line, written out as a partial record after a pause, then finished.
    dd.out("run", "-t", "--name", "tty", "busybox", "sh", "-c", "printf 'a\\nb'; sleep 0.5; printf 'c\\nd'")
    logs = subprocess.run(["/usr/local/bin/docker", "logs", "tty"], env=dd.daemon.docker_env(), capture_output=True,
                          timeout=60, check=True).stdout
    assert logs == b"a\r\nbc\r\nd"
    follow = subprocess.run(["/usr/local/bin/docker", "logs", "-f", "tty"], env=dd.daemon.docker_env(),
                            capture_output=True, timeout=60, check=True).stdout
    assert follow == b"a\r\nbc\r\nd"
    dd.out("run", "--name", "plain", "busybox", "sh", "-c", "printf 'a\\nb'")
    plain = subprocess.run(["/usr/local/bin/docker", "logs", "plain"], env=dd.daemon.docker_env(),
                           capture_output=True, timeout=60, check=True).stdout
    assert plain == b"a\nb"


def _probe_start(entry: dict[str, object]) -> datetime:
    """A health log entry's Start (RFC 3339 with nanoseconds) as an aware datetime, to microseconds."""
    text = str(entry["Start"]).rstrip("Z")
    whole, _, frac = text.partition(".")
    return datetime.fromisoformat(f"{whole}.{(frac + '000000')[:6]}+00:00")


def test_health_and_exec_records_survive_a_restart(dd: DockerDaemon) -> None:
    dd.out("pull", "hcbox")
    dd.out("run", "-d", "--name", "keep", "hcbox", "sh", "-c", "touch /tmp/ok; sleep 300")
    assert eventually(lambda: dd.inspect("keep")["State"].get("Health", {}).get("Status") == "healthy")
    client = docker.APIClient(base_url=f"unix://{dd.daemon.docker_socket}")
    exec_id = client.exec_create("keep", ["sh", "-c", "exit 3"])["Id"]
    client.exec_start(exec_id)
    assert client.exec_inspect(exec_id)["ExitCode"] == 3
    client.close()
    before = dd.inspect("keep")["State"]["Health"]

    stopped_at = datetime.now(UTC)
    dd.daemon.stop()
    dd.daemon.start()

    health = dd.inspect("keep")["State"]["Health"]  # right away: resumed, not "starting" again
    assert health["Status"] == "healthy"
    # The probe runs every 0.2 s and the log keeps the last 5 results, so probes between the snapshot and the
    # stop may have pushed some of `before` out: what must hold is that results from before the stop came back,
    # in order, continuing the snapshot.
    carried = [e for e in health["Log"] if _probe_start(e) < stopped_at]
    assert carried, health["Log"]
    still_kept = [e for e in before["Log"] if _probe_start(e) >= _probe_start(carried[0])]
    assert carried[:len(still_kept)] == still_kept
    client = docker.APIClient(base_url=f"unix://{dd.daemon.docker_socket}")
    record = client.exec_inspect(exec_id)
    assert record["ExitCode"] == 3 and record["Running"] is False and record["ProcessConfig"]["entrypoint"] == "sh"
    client.close()
    dd.out("stop", "-t", "1", "keep")
    assert dd.inspect("keep")["State"]["Health"]["Status"] == "healthy"  # the last state, shown while stopped


def test_nothing_left_behind(dockerd: DockerDaemon) -> None:
    dockerd.rm_all()
    assert eventually(lambda: not leftovers(dockerd.daemon)), leftovers(dockerd.daemon)
