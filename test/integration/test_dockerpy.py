"""docker-py (7.x) against narwhald: the calls most scripts make (containers, images, networks, volumes).

Our own tests, written against the documented behaviour of the SDK and the Engine API; docker-py's
upstream suite is measured separately by hack/dockerpy_suite.py.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import docker
import pytest
from lib import dockerpy
from lib.daemon import DaemonProcess
from lib.registry import Registry


@pytest.fixture(scope="module")
def daemon(registry: Registry) -> Iterator[DaemonProcess]:
    dockerpy.seed_registry(registry.host, ["library/busybox:latest", "library/busybox:1.36"])
    with dockerpy.docker_daemon(registry.host) as d:
        yield d


@pytest.fixture
def client(daemon: DaemonProcess) -> Iterator[Any]:
    c = dockerpy.client(daemon)
    c.images.pull("busybox", tag="latest")
    yield c
    for container in c.containers.list(all=True, filters={"label": "test=dockerpy"}):
        container.remove(force=True)
    c.close()


LABELS = {"test": "dockerpy"}


def test_run_attached_returns_output_and_remove_cleans_up(client: Any) -> None:
    out = client.containers.run("busybox", ["sh", "-c", "echo out; echo err >&2"], remove=True, labels=LABELS,
                                stderr=True)
    assert b"out\n" in out and b"err\n" in out
    assert client.containers.list(all=True, filters={"label": "test=dockerpy"}) == []


def test_run_error_carries_exit_status_and_stderr(client: Any) -> None:
    with pytest.raises(docker.errors.ContainerError) as exc:
        client.containers.run("busybox", ["sh", "-c", "echo boom >&2; exit 4"], labels=LABELS)
    assert exc.value.exit_status == 4
    assert b"boom" in exc.value.stderr


def test_run_unknown_image_is_not_found(client: Any, registry: Registry) -> None:
    # A name on the local registry: a docker.io name would fall back from the mirror to Docker Hub.
    # run() creates, gets 404 No such image, pulls, and the pull's 404 (manifest unknown) is raised.
    with pytest.raises(docker.errors.NotFound):
        client.containers.run(f"{registry.host}/library/busybox:no-such-tag", "true", labels=LABELS)


def test_detached_lifecycle_list_get_logs_exec_stop_remove(client: Any) -> None:
    container = client.containers.run("busybox", ["sh", "-c", "echo ready; exec sleep 300"], detach=True,
                                      name="dp-life", environment={"GREETING": "hi"}, labels=LABELS)
    assert client.containers.get("dp-life").id == container.id
    assert client.containers.get(container.id[:12]).name == "dp-life"
    assert container.id in [c.id for c in client.containers.list()]
    assert container.id in [c.id for c in client.containers.list(filters={"name": "dp-life"})]
    container.reload()
    assert container.status == "running"
    assert "GREETING=hi" in container.attrs["Config"]["Env"]
    assert container.attrs["Config"]["Labels"]["test"] == "dockerpy"
    code, out = container.exec_run(["sh", "-c", "echo $GREETING from exec"])
    assert (code, out) == (0, b"hi from exec\n")
    code, _ = container.exec_run(["sh", "-c", "exit 3"])
    assert code == 3
    code, (stdout, stderr) = container.exec_run(["sh", "-c", "echo o; echo e >&2"], demux=True)
    assert (code, stdout, stderr) == (0, b"o\n", b"e\n")
    assert container.logs() == b"ready\n"  # written before the exec_runs above could start
    container.stop(timeout=1)
    container.reload()
    assert container.status == "exited"
    # sleep as PID 1 ignores SIGTERM: the stop timeout ends in SIGKILL.
    assert container.wait()["StatusCode"] == 137 == container.attrs["State"]["ExitCode"]
    assert container.id not in [c.id for c in client.containers.list()]
    assert container.id in [c.id for c in client.containers.list(all=True)]
    container.remove()
    with pytest.raises(docker.errors.NotFound) as exc:
        client.containers.get("dp-life")
    assert "No such container: dp-life" in str(exc.value)


def test_remove_running_needs_force(client: Any) -> None:
    container = client.containers.run("busybox", ["sleep", "300"], detach=True, labels=LABELS)
    with pytest.raises(docker.errors.APIError) as exc:
        container.remove()
    assert exc.value.status_code == 409
    container.remove(force=True)
    with pytest.raises(docker.errors.NotFound):
        container.reload()


def test_name_conflict_is_409(client: Any) -> None:
    client.containers.create("busybox", "true", name="dp-dup", labels=LABELS)
    with pytest.raises(docker.errors.APIError) as exc:
        client.containers.create("busybox", "true", name="dp-dup", labels=LABELS)
    assert exc.value.status_code == 409
    assert "is already in use" in str(exc.value)


def test_images_pull_list_get_tag_remove(client: Any) -> None:
    image = client.images.pull("busybox", tag="1.36")
    assert "busybox:1.36" in image.tags
    assert image.id.startswith("sha256:")
    assert image.id in [i.id for i in client.images.list()]
    assert [i.id for i in client.images.list("busybox")] and image.id in [i.id for i in client.images.list("busybox")]
    assert client.images.get("busybox:1.36").id == image.id
    assert client.images.get(image.id[7:19]).id == image.id  # short ID
    assert image.tag("dockerpy/tagged", "v1") is True
    assert "dockerpy/tagged:v1" in client.images.get(image.id).tags
    client.images.remove("dockerpy/tagged:v1")
    assert "dockerpy/tagged:v1" not in client.images.get(image.id).tags
    client.images.remove("busybox:1.36")
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get("busybox:1.36")


def test_image_pull_of_unknown_tag_fails_cleanly(client: Any, registry: Registry) -> None:
    with pytest.raises(docker.errors.NotFound) as exc:
        client.images.pull(f"{registry.host}/library/busybox", tag="does-not-exist")
    assert "does-not-exist" in str(exc.value)
    assert not client.images.list(f"{registry.host}/library/busybox")


def test_networks_create_list_get_connect_remove(client: Any) -> None:
    network = client.networks.create("dp-net", labels={"purpose": "test"})
    try:
        assert network.name == "dp-net"
        assert network.attrs["Labels"] == {"purpose": "test"}
        assert network.attrs["Driver"] == "bridge"
        assert network.id in [n.id for n in client.networks.list(names=["dp-net"])]
        assert {"bridge", "host", "none"} <= {n.name for n in client.networks.list()}
        container = client.containers.run("busybox", ["sleep", "300"], detach=True, network="dp-net",
                                          labels=LABELS)
        network.reload()
        assert [c.id for c in network.containers] == [container.id]
        container.reload()
        settings = container.attrs["NetworkSettings"]["Networks"]["dp-net"]
        assert settings["IPAddress"]
        container.remove(force=True)
        network.reload()
        assert network.containers == []
    finally:
        network.remove()
    with pytest.raises(docker.errors.NotFound):
        client.networks.get("dp-net")


def test_volumes_create_list_get_use_remove(client: Any) -> None:
    volume = client.volumes.create("dp-vol", labels={"k": "v"})
    try:
        assert volume.attrs["Driver"] == "local" and volume.attrs["Labels"] == {"k": "v"}
        assert client.volumes.get("dp-vol").name == "dp-vol"
        assert "dp-vol" in [v.name for v in client.volumes.list()]
        client.containers.run("busybox", ["sh", "-c", "echo persisted > /data/f"], remove=True,
                              volumes={"dp-vol": {"bind": "/data", "mode": "rw"}}, labels=LABELS)
        out = client.containers.run("busybox", ["cat", "/data/f"], remove=True,
                                    volumes={"dp-vol": {"bind": "/data", "mode": "ro"}}, labels=LABELS)
        assert out == b"persisted\n"
    finally:
        volume.remove(force=True)
    with pytest.raises(docker.errors.NotFound):
        client.volumes.get("dp-vol")


def test_exec_start_frames_by_its_own_tty_flag(client: Any) -> None:
    """moby multiplexes an exec's output unless the *start* request says Tty, whatever the exec was created
    with; docker-py starts with Tty false unless asked, and demultiplexes."""
    container = client.containers.run("busybox", ["sleep", "300"], detach=True, labels=LABELS)
    framed = client.api.exec_create(container.id, ["echo", "hi"], tty=True)
    assert client.api.exec_start(framed, tty=False) == b"hi\r\n"
    assert client.api.exec_start(client.api.exec_create(container.id, ["echo", "hi"], tty=True), tty=True) == b"hi\r\n"
    container.remove(force=True)


def test_kill_returns_once_the_container_is_dead(client: Any) -> None:
    """moby's kill without a signal (SIGKILL) waits for the exit: inspect and remove right after see it stopped."""
    container = client.containers.run("busybox", ["sleep", "300"], detach=True, labels=LABELS)
    container.kill()
    container.reload()
    assert (container.status, container.attrs["State"]["ExitCode"]) == ("exited", 137)
    container.remove()  # no force needed


def test_wait_returns_at_the_exit_of_a_container_that_restarts(client: Any) -> None:
    """moby answers not-running waiters when the restart policy restarts the container, not only at the end."""
    container = client.containers.run("busybox", ["sh", "-c", "sleep 1; exit 3"], detach=True, labels=LABELS,
                                      restart_policy={"Name": "always"})
    assert container.wait(timeout=60)["StatusCode"] == 3
    container.remove(force=True)


def test_exec_detach_keys_as_docker_py_sends_them(client: Any) -> None:
    """docker-py puts ``detachKeys`` (lower-case d) in the exec create body; moby's Go decoder accepts it."""
    container = client.containers.run("busybox", ["sleep", "300"], detach=True, labels=LABELS)
    exec_id = client.api.exec_create(container.id, "cat", stdin=True, tty=True, detach_keys="ctrl-x")
    sock = client.api.exec_start(exec_id, tty=True, socket=True)
    raw = sock._sock
    try:
        raw.settimeout(30)  # a guard against hanging, not a measurement
        raw.sendall(b"\x18")  # ctrl-x: detach
        while True:
            try:
                if raw.recv(4096) == b"":
                    break  # the daemon closed the stream: detached
            except TimeoutError:
                pytest.fail("the detach keys did not detach")
    finally:
        sock.close()
        raw.close()
        container.remove(force=True)


def test_prune_reports_the_space_of_the_writable_layers(client: Any) -> None:
    kept = client.containers.run("busybox", ["sleep", "300"], detach=True, labels=LABELS)
    done = client.containers.run("busybox", ["sh", "-c", "head -c 200000 /dev/zero > /blob"], detach=True,
                                 labels=LABELS)
    done.wait()
    result = client.containers.prune(filters={"label": "test=dockerpy"})
    assert result["ContainersDeleted"] == [done.id]
    assert result["SpaceReclaimed"] >= 200000
    kept.remove(force=True)


def test_a_restarting_container_needs_force_to_be_removed(client: Any) -> None:
    container = client.containers.run("busybox", ["sh", "-c", "exit 1"], detach=True, labels=LABELS,
                                      restart_policy={"Name": "always"})
    container.wait(timeout=60)  # its first exit: from here on it is restarting or running again
    with pytest.raises(docker.errors.APIError) as exc:
        container.remove()
    assert exc.value.status_code == 409
    assert "stop the container before removing or force remove" in str(exc.value)
    container.remove(force=True)
