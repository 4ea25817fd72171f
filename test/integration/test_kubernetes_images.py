"""One node, two faces (issue 20): an image made through the Docker API runs in a pod with no registry
(docker-images-for-pods), and neither face removes it while the other one uses it."""
from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

import docker as docker_py
import grpc
import mkimage
import pytest
from cri_api.v1 import api_pb2
from lib import cri
from lib.daemon import DaemonProcess, start_daemon
from lib.leaks import ctr, leftovers

DOCKER = "/usr/local/bin/docker"
APP = "docker.io/library/app:dev"


def docker(d: DaemonProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DOCKER, *args], env=d.docker_env(), capture_output=True, text=True, timeout=120)


def ok(d: DaemonProcess, *args: str) -> str:
    p = docker(d, *args)
    assert p.returncode == 0, f"docker {' '.join(args)} -> {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p.stdout


def app_archive(tmp: Path) -> Path:
    """An OCI layout tarball of the offline busybox image named app:dev (what `docker save` would give)."""
    layout = tmp / "layout"
    mkimage.write_oci_layout(layout, mkimage.build("busybox"), ref_name="app:dev")
    archive = tmp / "app.tar"
    with tarfile.open(archive, "w") as tar:
        for path in sorted(layout.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(layout)), recursive=False)
    return archive


def cri_image(d: DaemonProcess, ref: str) -> api_pb2.Image | None:
    status = d.images().ImageStatus(api_pb2.ImageStatusRequest(image=api_pb2.ImageSpec(image=ref)), timeout=30)
    return status.image if status.HasField("image") else None


@pytest.fixture
def shared(tmp_path: Path) -> DaemonProcess:
    d = start_daemon("docker-images-for-pods: true\n")
    yield d
    d.destroy()


def test_docker_loaded_image_runs_in_a_pod_without_a_pull(shared: DaemonProcess, tmp_path: Path) -> None:
    d = shared
    assert "Loaded image: app:dev" in ok(d, "load", "-i", str(app_archive(tmp_path)))
    image_id = json.loads(ok(d, "image", "inspect", "app:dev"))[0]["Id"]
    found = cri_image(d, "app:dev")
    assert found is not None and found.id == image_id and APP in found.repo_tags
    listed = d.images().ListImages(api_pb2.ListImagesRequest(), timeout=30).images
    assert [i.id for i in listed if APP in i.repo_tags] == [image_id]
    # The blobs were linked into the CRI namespace by digest (containerd's shared content), not streamed again.
    assert image_id in ctr(d, "content", "ls", "-q", namespace="narwhal").split()
    shared = [line.split("shared: ", 1)[1] for line in d.log().splitlines() if "pkg.images.share" in line]
    assert len(shared) == 2 and all(line.startswith("0 of ") for line in shared), shared  # config and layer

    rs = d.runtime()
    config = cri.sandbox_config(log_dir=tmp_path / "logs", host_network=True)
    pod = rs.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=config), timeout=60).pod_sandbox_id
    cid = rs.CreateContainer(api_pb2.CreateContainerRequest(
        pod_sandbox_id=pod, config=cri.container_config("app:dev", ["sh", "-c", "echo dev build; sleep 3600"],
                                                        name="app", log_path="app.log"),
        sandbox_config=config), timeout=60).container_id
    rs.StartContainer(api_pb2.StartContainerRequest(container_id=cid), timeout=60)
    log_file = tmp_path / "logs" / "app.log"
    cri.wait_for(lambda: log_file.exists() and "dev build" in log_file.read_text(), what="the pod's output")
    calls = d.log()  # the daemon logs every CRI call at debug level
    assert "CreateContainer -> OK" in calls and "PullImage" not in calls  # no pull: no registry involved

    # Docker face: the pod's container is a user of the image (moby's conflicts).
    p = docker(d, "rmi", "app:dev")
    assert p.returncode != 0
    assert f'unable to remove repository reference "app:dev" (must force) - container {cid[:12]}' in p.stderr
    p = docker(d, "rmi", "-f", image_id)
    assert p.returncode != 0 and f"image is being used by running container {cid[:12]}" in p.stderr
    assert cri_image(d, "app:dev") is not None

    # CRI face (kubelet's image GC): refused while a Docker container was created from it.
    docker_cid = ok(d, "create", "app:dev", "true").strip()
    rs.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod), timeout=60)
    rs.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod), timeout=60)
    with pytest.raises(grpc.RpcError) as refused:
        d.images().RemoveImage(api_pb2.RemoveImageRequest(image=api_pb2.ImageSpec(image=image_id)), timeout=30)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert f"in use by Docker container {docker_cid[:12]}" in (refused.value.details() or "")
    assert json.loads(ok(d, "image", "inspect", "app:dev"))[0]["Id"] == image_id

    # Neither uses it any more: docker rmi removes it from both faces.
    ok(d, "rm", docker_cid)
    ok(d, "rmi", "app:dev")
    assert cri_image(d, "app:dev") is None
    assert leftovers(d) == {}


def test_docker_build_then_pod(shared: DaemonProcess, tmp_path: Path) -> None:
    """minikube's docker-env workflow: docker build -t app:dev, then a pod runs it (no pull), then cleanup."""
    d = shared
    ok(d, "load", "-i", str(app_archive(tmp_path)))
    ok(d, "tag", "app:dev", "base:1")
    ok(d, "rmi", "app:dev")
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM base:1\nRUN echo built by docker > /built\nCMD [\"cat\", \"/built\"]\n")
    ok(d, "build", "-t", "app:dev", str(context))
    image_id = json.loads(ok(d, "image", "inspect", "app:dev"))[0]["Id"]
    found = cri_image(d, "app:dev")
    assert found is not None and found.id == image_id

    rs = d.runtime()
    config = cri.sandbox_config(log_dir=tmp_path / "logs", host_network=True)
    pod = rs.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=config), timeout=60).pod_sandbox_id
    cid = rs.CreateContainer(api_pb2.CreateContainerRequest(
        pod_sandbox_id=pod, config=cri.container_config(APP, [], name="app", log_path="app.log"),
        sandbox_config=config), timeout=60).container_id
    rs.StartContainer(api_pb2.StartContainerRequest(container_id=cid), timeout=60)
    cri.wait_for(lambda: cri.container_state(rs, cid).state == api_pb2.CONTAINER_EXITED, what="the pod's exit")
    assert "built by docker" in (tmp_path / "logs" / "app.log").read_text()
    assert cri.container_state(rs, cid).exit_code == 0
    rs.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod), timeout=60)
    rs.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod), timeout=60)
    ok(d, "rmi", "app:dev", "base:1")
    ok(d, "builder", "prune", "-af")
    assert cri_image(d, "app:dev") is None and cri_image(d, "base:1") is None
    assert leftovers(d) == {}


def test_tag_and_cri_pulled_names(shared: DaemonProcess, tmp_path: Path) -> None:
    """A tag is mirrored; a CRI-side removal of an image no Docker container uses goes (Docker keeps its own)."""
    d = shared
    ok(d, "load", "-i", str(app_archive(tmp_path)))
    ok(d, "tag", "app:dev", "app:v2")
    assert cri_image(d, "app:v2") is not None
    d.images().RemoveImage(api_pb2.RemoveImageRequest(image=api_pb2.ImageSpec(image="app:v2")), timeout=30)
    assert cri_image(d, "app:v2") is None and cri_image(d, "app:dev") is None  # the image, all its names
    assert json.loads(ok(d, "image", "inspect", "app:v2"))[0]["RepoTags"] == ["app:dev", "app:v2"]
    ok(d, "rmi", "app:dev", "app:v2")
    assert leftovers(d) == {}


def test_switch_off_keeps_images_apart_and_turning_it_on_shares_them(tmp_path: Path) -> None:
    d = start_daemon()
    try:
        ok(d, "load", "-i", str(app_archive(tmp_path)))
        assert cri_image(d, "app:dev") is None
        d.stop()
        d.args += ["--docker-images-for-pods", "true"]
        d.start()
        found = cri_image(d, "app:dev")  # mirrored at start: images Docker had before the switch
        assert found is not None and found.id == json.loads(ok(d, "image", "inspect", "app:dev"))[0]["Id"]
        ok(d, "rmi", "app:dev")
        assert cri_image(d, "app:dev") is None
        assert leftovers(d) == {}
    finally:
        d.destroy()


def test_system_df_counts_an_image_of_both_faces_once(tmp_path: Path) -> None:
    """docker system df with both switches: the image in both stores is one entry, used by the Docker container
    and the pod's; LayersSize is Docker's unpacked layers, each once: not the CRI namespace's second unpacking,
    not the containers' writable layers (each container's SizeRw)."""
    d = start_daemon("docker-images-for-pods: true\ndocker-shows-pods: true\n")
    try:
        ok(d, "load", "-i", str(app_archive(tmp_path)))
        ok(d, "tag", "app:dev", "app:v2")  # a second name: still one image
        image_id = json.loads(ok(d, "image", "inspect", "app:dev"))[0]["Id"]
        docker_cid = ok(d, "run", "-d", "app:dev", "sh", "-c",
                        "dd if=/dev/zero of=/big bs=1M count=4 2>/dev/null; sleep 3600").strip()
        rs = d.runtime()
        config = cri.sandbox_config(log_dir=tmp_path / "logs", host_network=True)
        pod = rs.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=config), timeout=60).pod_sandbox_id
        cid = rs.CreateContainer(api_pb2.CreateContainerRequest(
            pod_sandbox_id=pod, config=cri.container_config(APP, ["sleep", "3600"], name="app", log_path="app.log"),
            sandbox_config=config), timeout=60).container_id
        rs.StartContainer(api_pb2.StartContainerRequest(container_id=cid), timeout=60)

        client = docker_py.APIClient(base_url=f"unix://{d.docker_socket}", version="1.41")
        cri.wait_for(lambda: next(c["SizeRw"] for c in client.df()["Containers"] if c["Id"] == docker_cid)
                     >= 4 << 20, what="the Docker container's 4 MiB in its writable layer")
        df = client.df()
        [image] = [i for i in df["Images"] if i["Id"] == image_id]
        assert len(df["Images"]) == 1 and sorted(image["RepoTags"]) == ["app:dev", "app:v2"]
        assert image["Containers"] == 2  # the Docker container and the pod's, which runs the CRI copy
        assert {c["Id"] for c in df["Containers"]} == {docker_cid, cid}
        assert image["Size"] > 0 and df["LayersSize"] == image["Size"]  # one image: its layers, once
        client.close()

        rs.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod), timeout=60)
        rs.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod), timeout=60)
        ok(d, "rm", "-f", docker_cid)
        ok(d, "rmi", "app:dev", "app:v2")
        assert leftovers(d) == {}
    finally:
        d.destroy()
