"""docker-py against narwhald: ping, version, info, df, swarm (upstream's suite: hack/dockerpy_suite.py)."""
from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from lib import dockerpy
from lib.daemon import DaemonProcess
from lib.registry import Registry


@pytest.fixture(scope="module")
def daemon(registry: Registry) -> Iterator[DaemonProcess]:
    dockerpy.seed_registry(registry.host, ["library/busybox:latest"])
    with dockerpy.docker_daemon(registry.host) as d:
        yield d


@pytest.fixture
def client(daemon: DaemonProcess) -> Iterator[Any]:
    c = dockerpy.client(daemon)
    yield c
    c.close()


def test_ping_and_version(client: Any) -> None:
    assert client.ping() is True
    version = client.version()
    assert version["ApiVersion"] == "1.53"
    assert version["Os"] == "linux"
    names = [c["Name"] for c in version["Components"]]
    assert names[:1] == ["Engine"] and "containerd" in names and "runc" in names


def test_info_describes_this_host_and_engine(client: Any, daemon: DaemonProcess, registry: Registry) -> None:
    info = client.info()
    assert info["OSType"] == "linux"
    assert info["NCPU"] == os.cpu_count()
    assert info["MemTotal"] > 0
    assert info["KernelVersion"] == os.uname().release
    assert info["Name"] == os.uname().nodename
    assert info["Driver"] == "overlayfs"
    assert info["CgroupDriver"] == "cgroupfs"
    assert info["CgroupVersion"] == ("2" if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else "1")
    assert info["DockerRootDir"] == str(daemon.root / "docker")
    assert info["DefaultRuntime"] == "runc" and "runc" in info["Runtimes"]
    assert os.path.isabs(info["Runtimes"]["runc"]["path"])
    assert info["Swarm"]["LocalNodeState"] == "inactive"
    assert "name=seccomp,profile=builtin" in info["SecurityOptions"]
    assert info["RegistryConfig"]["IndexConfigs"]["docker.io"]["Mirrors"] == [f"http://{registry.host}"]
    assert info["Containers"] == info["ContainersRunning"] + info["ContainersPaused"] + info["ContainersStopped"]
    assert info["ExperimentalBuild"] is False
    assert info["Debug"] is True  # test daemons log at debug level
    # The engine ID is stable across calls (kept under root).
    assert client.info()["ID"] == info["ID"] == (daemon.root / "engine-id").read_text().strip()


def test_info_counts_images_of_the_docker_domain(client: Any) -> None:
    before = client.info()["Images"]
    client.images.pull("busybox", tag="latest")
    assert client.info()["Images"] == len(client.images.list()) >= max(before, 1)


def test_df_reports_images_and_empty_build_cache(client: Any) -> None:
    image = client.images.pull("busybox", tag="latest")
    df = client.df()
    assert set(df) >= {"LayersSize", "Images", "Containers", "Volumes", "BuildCache"}
    assert df["BuildCache"] == []
    entry = next(i for i in df["Images"] if i["Id"] == image.id)
    assert "busybox:latest" in entry["RepoTags"]
    assert entry["Size"] > 0 and entry["Containers"] == 0
    assert df["LayersSize"] > 0


def test_info_and_df_at_the_oldest_api_version(daemon: DaemonProcess) -> None:
    old = dockerpy.client(daemon, version="1.40")
    try:
        info = old.info()
        assert info["ContainerdCommit"]["Expected"] == info["ContainerdCommit"]["ID"]
        image = old.images.pull("busybox", tag="latest")
        entry = next(i for i in old.df()["Images"] if i["Id"] == image.id)
        assert entry["VirtualSize"] == entry["Size"]  # gone from 1.44 on
    finally:
        old.close()


def test_df_type_filter_and_bad_type(client: Any) -> None:
    only_volumes = client.api._result(client.api._get(client.api._url("/system/df"), params={"type": "volume"}), True)
    assert set(only_volumes) == {"Volumes"}
    response = client.api._get(client.api._url("/system/df"), params={"type": "bogus"})
    assert response.status_code == 400
    assert response.json() == {"message": "unknown object type: bogus"}


def test_swarm_answers_as_a_node_in_none(client: Any) -> None:
    import docker

    with pytest.raises(docker.errors.APIError) as exc:
        client.swarm.reload()
    assert exc.value.response.status_code == 503
    assert client.api.leave_swarm(force=True) is True  # docker-py treats 503 on a forced leave as done


def test_info_and_df_count_containers(client: Any) -> None:
    client.images.pull("busybox", tag="latest")
    before = client.info()
    running = client.containers.run("busybox", ["sh", "-c", "head -c 300000 /dev/zero > /big; exec sleep 300"],
                                    detach=True, name="sys-running")
    stopped = client.containers.create("busybox", "true", name="sys-created")
    try:
        for _ in range(100):
            if running.exec_run(["test", "-s", "/big"])[0] == 0:
                break
        info = client.info()
        assert info["Containers"] == before["Containers"] + 2
        assert info["ContainersRunning"] == before["ContainersRunning"] + 1
        assert info["ContainersStopped"] == before["ContainersStopped"] + 1
        df = client.df()
        entries = {c["Names"][0]: c for c in df["Containers"]}
        assert entries["/sys-running"]["State"] == "running"
        assert entries["/sys-running"]["SizeRw"] >= 300000  # the file written into its writable layer
        assert entries["/sys-created"]["State"] == "created"
        image = next(i for i in df["Images"] if i["Id"] == running.image.id)
        assert image["Containers"] >= 2
    finally:
        running.remove(force=True)
        stopped.remove(force=True)


def test_sigterm_ends_open_streams(registry: Registry) -> None:
    """An open ``docker logs -f`` must not hold narwhald's shutdown (aiohttp waits 60 s for requests by default)."""
    import subprocess

    dockerpy.seed_registry(registry.host, ["library/busybox:latest"])
    with dockerpy.docker_daemon(registry.host) as d:
        env = d.docker_env()
        p = subprocess.run(["docker", "run", "-d", "--name", "streamer", "busybox", "sh", "-c", "echo up; sleep 300"],
                           env=env, capture_output=True, timeout=60, text=True)
        assert p.returncode == 0, p.stderr
        follower = subprocess.Popen(["docker", "logs", "-f", "streamer"], env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL)
        try:
            assert follower.stdout is not None and follower.stdout.readline() == b"up\n"  # the stream is open
            assert dockerpy.stop(d) == ""
            follower.wait(10)  # and the client saw it end
        finally:
            follower.kill()
            follower.wait()
            if follower.stdout is not None:
                follower.stdout.close()
