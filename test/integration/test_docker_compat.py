"""Docker semantics docker-py's upstream suite checks, through docker-py 7 against one narwhald: the endpoint
settings inspect shows (IPAMConfig as requested, DNSNames), HostConfig fields echoed as given (Isolation,
VolumeDriver, LogConfig) and the log drivers' checks."""
from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import docker
import pytest
from lib import dockerpy
from lib.daemon import DaemonProcess
from lib.docker import DOCKER
from lib.registry import Registry


@pytest.fixture(scope="module")
def daemon(registry: Registry) -> Iterator[DaemonProcess]:
    dockerpy.seed_registry(registry.host, ["library/busybox:latest", "library/alpine:3.10",
                                           "library/hello-world:latest"])
    d = dockerpy.start_docker_daemon(registry.host)
    try:
        yield d
    finally:
        dockerpy.destroy(d)


@pytest.fixture(scope="module")
def client(daemon: DaemonProcess) -> Iterator[Any]:
    yield from dockerpy.busybox_session(daemon)


def test_endpoint_settings_in_inspect(client: Any, daemon: DaemonProcess) -> None:
    api = client.api
    ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet="10.202.3.0/24")])
    net = client.networks.create("compatnet", ipam=ipam)
    try:
        created = api.create_container(
            "busybox", ["sleep", "300"], name="compat-ep", hostname="compat-host",
            host_config=api.create_host_config(network_mode="compatnet"),
            networking_config=api.create_networking_config({"compatnet": api.create_endpoint_config(
                ipv4_address="10.202.3.23", aliases=["web"], link_local_ips=["169.254.8.8"])}))
        api.start(created)
        ep = api.inspect_container(created)["NetworkSettings"]["Networks"]["compatnet"]
        assert ep["IPAMConfig"] == {"IPv4Address": "10.202.3.23", "LinkLocalIPs": ["169.254.8.8"]}
        assert ep["IPAddress"] == "10.202.3.23"
        assert ep["NetworkID"] == net.id and len(ep["EndpointID"]) == 64
        assert ep["DNSNames"] == ["compat-ep", "web", created["Id"][:12], "compat-host"]
        assert ep["Links"] is None

        plain = client.containers.run("busybox", ["sleep", "300"], detach=True)
        bridge = api.inspect_container(plain.id)["NetworkSettings"]["Networks"]["bridge"]
        assert bridge["IPAMConfig"] is None and bridge["DNSNames"] is None and bridge["IPAddress"]
        old = dockerpy.client(daemon, version="1.43")
        try:
            assert old.api.inspect_container(created)["NetworkSettings"]["Networks"]["compatnet"]["DNSNames"] is None
        finally:
            old.close()
    finally:
        for c in client.containers.list(all=True):
            c.remove(force=True)
        net.remove()



def test_host_config_echoed(client: Any) -> None:
    c = client.containers.create("busybox", ["true"], isolation="default", volume_driver="foo",
                                 log_config={"Type": "json-file", "Config": {"max-file": "100"}})
    try:
        host = c.attrs["HostConfig"]
        assert host["Isolation"] == "default" and host["VolumeDriver"] == "foo"
        assert host["LogConfig"] == {"Type": "json-file", "Config": {"max-file": "100"}}
    finally:
        c.remove(force=True)
    # VolumeDriver is the driver of the -v volumes: there is only "local"
    before = len(client.containers.list(all=True))
    with pytest.raises(docker.errors.APIError) as refused:
        client.containers.create("busybox", ["true"], volume_driver="foo", volumes=["vdvol:/data"])
    assert refused.value.status_code < 500 and "foo" in refused.value.explanation
    assert len(client.containers.list(all=True)) == before and not client.volumes.list(filters={"name": "vdvol"})
    # no type: the daemon's default driver, with the options given
    c = client.containers.create("busybox", ["true"], log_config={"Type": "", "Config": {"max-size": "1m"}})
    try:
        assert c.attrs["HostConfig"]["LogConfig"] == {"Type": "json-file", "Config": {"max-size": "1m"}}
    finally:
        c.remove(force=True)


@pytest.mark.parametrize(("log_config", "message"), [
    ({"Type": "asdf-nope"}, "logger: no log driver named 'asdf-nope' is registered"),
    ({"Type": "local", "Config": {"labels": "x"}}, "unknown log opt 'labels' for local log driver"),
])
def test_log_config_refused(client: Any, log_config: dict[str, Any], message: str) -> None:
    with pytest.raises(docker.errors.APIError) as refused:
        client.containers.create("busybox", ["true"], log_config=log_config)
    assert refused.value.status_code == 400 and refused.value.explanation == message


def test_isolation_refused(client: Any) -> None:
    with pytest.raises(docker.errors.APIError) as refused:
        client.containers.create("busybox", ["true"], isolation="hyperv")
    assert refused.value.status_code == 400 and refused.value.explanation == "invalid isolation 'hyperv' on linux"


def test_none_log_driver_has_no_logs(client: Any) -> None:
    assert client.containers.run("busybox", ["echo", "hello"], log_config={"Type": "none"}, remove=True) is None
    c = client.containers.run("busybox", ["echo", "hello"], log_config={"Type": "none"}, detach=True)
    try:
        c.wait()
        c.reload()
        assert c.attrs["LogPath"] == "" and c.attrs["HostConfig"]["LogConfig"] == {"Type": "none", "Config": {}}
        with pytest.raises(docker.errors.APIError) as refused:
            c.logs()
        assert refused.value.status_code == 501
        assert refused.value.explanation == "configured logging driver does not support reading"
    finally:
        c.remove(force=True)


def test_group_add(client: Any) -> None:
    out = client.containers.run("busybox", ["id", "-G"], group_add=["1000", "1001"], remove=True)
    assert {"1000", "1001"} <= set(out.decode().split())
    c = client.containers.create("busybox", ["true"], group_add=["1002"])
    try:
        assert c.attrs["HostConfig"]["GroupAdd"] == ["1002"]
    finally:
        c.remove(force=True)
    client.images.pull("alpine", tag="3.10")
    out = client.containers.run("alpine:3.10", ["id", "-G"], group_add=["postgres", "1003"], remove=True)
    assert {"70", "1003"} <= set(out.decode().split())  # by name from the image's /etc/group
    before = len(client.containers.list(all=True))
    with pytest.raises(docker.errors.APIError) as refused:
        client.containers.create("alpine:3.10", ["true"], group_add=["nosuch"])
    assert refused.value.status_code == 400
    assert refused.value.explanation == "Unable to find group nosuch: no matching entries in group file"
    assert len(client.containers.list(all=True)) == before  # nothing left of the refused create


def test_forced_disconnect_of_a_container_not_on_the_network(client: Any) -> None:
    ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet="10.202.4.0/24")])
    net = client.networks.create("compatnet2", ipam=ipam)
    c = client.containers.run("busybox", ["sleep", "300"], detach=True)
    try:
        net.connect(c)
        net.disconnect(c, force=True)
        net.reload()
        assert not net.attrs.get("Containers")
        with pytest.raises(docker.errors.APIError) as refused:
            net.disconnect(c, force=True)
        assert "is not connected to network compatnet2" in refused.value.explanation
    finally:
        c.remove(force=True)
        net.remove()



def test_device_cgroup_rules(client: Any) -> None:
    rule = "c 7:128 rwm"
    c = client.containers.create("busybox", ["cat", "/sys/fs/cgroup/devices/devices.list"],
                                 device_cgroup_rules=[rule, "b *:* m"])
    try:
        assert c.attrs["HostConfig"]["DeviceCgroupRules"] == [rule, "b *:* m"]
        c.start()
        c.wait()
        allowed = c.logs().decode().splitlines()
        assert rule in allowed and "b *:* m" in allowed
    finally:
        c.remove(force=True)
    with pytest.raises(docker.errors.APIError) as refused:
        client.containers.create("busybox", ["true"], device_cgroup_rules=["c 7 rwm"])
    assert refused.value.status_code == 400
    assert refused.value.explanation == "invalid device cgroup format 'c 7 rwm'"


def test_docker_cli(daemon: DaemonProcess, client: Any) -> None:
    """The same through the docker CLI: --group-add, --device-cgroup-rule, --log-driver/--log-opt (``client``
    pulled busybox)."""
    def docker(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([DOCKER, *args], env=daemon.docker_env(), capture_output=True, text=True, timeout=60)

    run = docker("run", "--rm", "--group-add", "1234", "--device-cgroup-rule", "c 7:128 rwm", "busybox", "sh", "-c",
                 "id -G; cat /sys/fs/cgroup/devices/devices.list")
    assert run.returncode == 0, run.stderr
    assert "1234" in run.stdout.splitlines()[0].split() and "c 7:128 rwm" in run.stdout.splitlines()[1:]
    bad = docker("create", "--log-driver", "json-file", "--log-opt", "max-sise=1m", "busybox")
    assert bad.returncode != 0 and "unknown log opt 'max-sise' for json-file log driver" in bad.stderr
    created = docker("run", "-d", "--log-driver", "none", "busybox", "echo", "hi")
    assert created.returncode == 0, created.stderr
    try:
        logs = docker("logs", created.stdout.strip())
        assert logs.returncode != 0 and "configured logging driver does not support reading" in logs.stderr
    finally:
        docker("rm", "-f", created.stdout.strip())

def test_image_prune_reports_space_reclaimed(client: Any) -> None:
    """Last in the module: pruning unused images also takes busybox (hello-world is the same image here).
    Only what is really gone counts: busybox's one layer is also alpine's (in use), so it is not reclaimed."""
    api = client.api
    api.pull("alpine", tag="3.10")
    keep = api.create_container("alpine:3.10", ["sleep", "300"])
    try:
        api.pull("hello-world", tag="latest")
        image = api.inspect_image("hello-world")
        assert image["Id"] not in [i.get("Deleted") for i in api.prune_images()["ImagesDeleted"] or []]
        result = api.prune_images({"dangling": False})
        assert "hello-world:latest" in [i.get("Untagged") for i in result["ImagesDeleted"]]
        assert image["Id"] in [i.get("Deleted") for i in result["ImagesDeleted"]]
        assert 0 < result["SpaceReclaimed"] < image["Size"]  # its manifest, not the shared layer
        alpine = api.inspect_image("alpine:3.10")  # in use: kept
        api.remove_container(keep, force=True)
        result = api.prune_images({"dangling": False})
        assert alpine["Id"] in [i.get("Deleted") for i in result["ImagesDeleted"]]
        assert result["SpaceReclaimed"] > alpine["Size"]  # both its layers now, and its manifest
    finally:
        for c in api.containers(all=True):
            api.remove_container(c["Id"], force=True)
        client.images.pull("busybox", tag="latest")
