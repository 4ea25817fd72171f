"""Docker image endpoints with the real docker CLI (and raw API calls where the CLI hides the wire format).

One narwhald for the module, with docker.io mirrored to a private registry
holding busybox, so ``docker pull busybox`` works offline.
"""
from __future__ import annotations

import http.client
import json
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import mkimage
import pytest
from lib import images
from lib.cni_host import InstanceNetwork
from lib.daemon import DaemonProcess, start_daemon
from lib.registry import Registry, start_registry
from lib.token_auth import start_token_registry


@dataclass
class Env:
    daemon: DaemonProcess
    registry: Registry
    busybox: mkimage.Image
    config_dir: Path

    def docker(self, *args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {**self.daemon.docker_env(), "DOCKER_CONFIG": str(self.config_dir)}
        out = subprocess.run(["docker", *args], env=env, capture_output=True, text=True, timeout=120, input=stdin)
        if check and out.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
        return out

    def api(self, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        conn = _UnixHTTPConnection(str(self.daemon.docker_socket))
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def ctr(self, *args: str) -> str:
        sock = self.daemon.state / "containerd" / "containerd.sock"
        return subprocess.run(["ctr", "-a", str(sock), "-n", "narwhal-docker", *args], check=True,
                              capture_output=True, text=True, timeout=60).stdout


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=120)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(120)
        sock.connect(self._path)
        self.sock = sock


def assert_no_leftovers(env: Env) -> None:
    """What failed operations must not leave: leases, ingests, active snapshots, spooled uploads."""
    assert env.ctr("leases", "ls", "-q").split() == []
    assert env.ctr("content", "active").splitlines()[1:] == []
    assert [line for line in env.ctr("snapshots", "ls").splitlines()[1:] if "Active" in line] == []
    spool = env.daemon.root / "tmp"
    assert not spool.exists() or list(spool.iterdir()) == []


def lines(body: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in body.split(b"\r\n") if line.strip()]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    reg = start_registry()
    daemon = None
    try:
        built = images.push(reg.host, "library/busybox")
        daemon = start_daemon(config_yaml=f"registry:\n  mirrors:\n    docker.io: [http://{reg.host}]\n")
        yield Env(daemon, reg, built, tmp_path_factory.mktemp("docker-config"))
    finally:
        if daemon is not None:
            network = InstanceNetwork.of(daemon.root, daemon.base / "net.d")  # before destroy() removes the dirs
            daemon.destroy()
            network.remove()  # the instance's bridge and iptables state are host-global
        reg.stop()


def _forget(env: Env, *refs: str) -> None:
    for ref in refs:
        env.docker("rmi", "-f", ref, check=False)


def test_pull_streams_progress_then_is_up_to_date(env: Env) -> None:
    _forget(env, "busybox")
    status, body = env.api("POST", "/v1.53/images/create?fromImage=busybox&tag=latest")
    assert status == 200
    msgs = lines(body)
    layer = env.busybox.layers[0]
    short = layer.digest.split(":")[1][:12]
    assert msgs[0] == {"status": "Pulling from library/busybox", "id": "latest"}
    per_layer = [m["status"] for m in msgs if m.get("id") == short]
    assert per_layer[0] == "Pulling fs layer"
    assert per_layer[-1] == "Pull complete"
    assert {"Downloading", "Download complete", "Extracting"} <= set(per_layer)
    downloading = [m for m in msgs if m.get("id") == short and m["status"] == "Downloading"]
    assert downloading[-1]["progressDetail"] == {"current": len(layer.data), "total": len(layer.data)}
    assert downloading[-1]["progress"].startswith("[" + "=" * 50 + ">]")
    assert msgs[-2] == {"status": f"Digest: {env.busybox.manifest.digest}"}
    assert msgs[-1] == {"status": "Status: Downloaded newer image for busybox:latest"}

    out = env.docker("pull", "busybox")
    assert f"{short}: Already exists" in out.stdout
    assert "Status: Image is up to date for busybox:latest" in out.stdout
    assert out.stdout.strip().endswith("docker.io/library/busybox:latest")


def test_images_inspect_and_history_as_docker_shows_them(env: Env) -> None:
    env.docker("pull", "-q", "busybox")
    image_id = env.busybox.config.digest
    rows = [json.loads(line) for line in env.docker("images", "--format", "{{json .}}").stdout.splitlines()]
    row = next(r for r in rows if r["Repository"] == "busybox")
    assert (row["Tag"], row["ID"]) == ("latest", image_id.split(":")[1][:12])
    header = env.docker("images").stdout.splitlines()[0].split()
    assert header == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]

    [inspected] = json.loads(env.docker("image", "inspect", "busybox").stdout)
    assert inspected["Id"] == image_id
    assert inspected["RepoTags"] == ["busybox:latest"]
    assert inspected["RepoDigests"] == [f"busybox@{env.busybox.manifest.digest}"]
    assert inspected["RootFS"] == {"Type": "layers", "Layers": env.busybox.diff_ids}
    assert inspected["Config"]["Cmd"] == ["sh"]
    assert (inspected["Os"], inspected["Architecture"]) == ("linux", "amd64")
    assert inspected["Size"] > len(env.busybox.layers[0].data)  # unpacked, not the gzip blob
    # the same image by ID prefix, by full ID and by digest
    for name in (image_id[7:19], image_id, f"busybox@{env.busybox.manifest.digest}"):
        assert json.loads(env.docker("image", "inspect", name).stdout)[0]["Id"] == image_id

    history = env.docker("history", "--no-trunc", "--format", "{{.ID}}|{{.CreatedBy}}|{{.Size}}", "busybox")
    assert history.stdout.splitlines() == [f"{image_id}|hack/mkimage.py busybox layer 0|{_size(env)}"]

    missing = env.docker("image", "inspect", "nosuch", check=False)
    assert missing.returncode == 1 and "Error response from daemon: No such image: nosuch" in missing.stderr


def _size(env: Env) -> str:
    """The layer's size as the CLI prints it (3 significant digits): the inspect Size of a one-layer image."""
    size: float = json.loads(env.docker("image", "inspect", "busybox").stdout)[0]["Size"]
    units = ["B", "kB", "MB", "GB"]
    i = 0
    while size >= 1000 and i < len(units) - 1:
        size /= 1000
        i += 1
    return f"{size:.3g}{units[i]}"


def test_tag_push_and_pull_back_by_digest(env: Env) -> None:
    env.docker("pull", "-q", "busybox")
    target = f"{env.registry.host}/me/bb:1"
    env.docker("tag", "busybox", target)
    pushed = env.docker("push", target).stdout
    assert f"The push refers to repository [{env.registry.host}/me/bb]" in pushed
    digest = env.busybox.manifest.digest
    assert f"1: digest: {digest} size: {len(env.busybox.manifest.data)}" in pushed
    again = env.docker("push", target).stdout
    assert "Layer already exists" in again

    assert env.docker("rmi", target).stdout.splitlines() == [f"Untagged: {target}"]
    by_digest = f"{env.registry.host}/me/bb@{digest}"
    env.docker("pull", by_digest)
    assert json.loads(env.docker("image", "inspect", by_digest).stdout)[0]["Id"] == env.busybox.config.digest

    status, _ = env.api("POST", "/v1.53/images/nosuch-image-here/push?tag=1", headers={"X-Registry-Auth": "e30="})
    assert status == 404

    until = str(int(time.time()) + 1)
    events = env.docker("events", "--since", "0", "--until", until, "--filter", "type=image",
                        "--format", "{{.Action}} {{.Actor.ID}}").stdout.splitlines()
    assert f"tag {env.busybox.config.digest}" in events
    assert f"push {target}" in events
    assert f"untag {env.busybox.config.digest}" in events
    assert f"pull {by_digest}" in events


def test_pull_all_tags(env: Env) -> None:
    for tag in ("a", "b"):
        images.push_built(env.registry.host, "library/multi", tag, env.busybox)
    out = env.docker("pull", "--all-tags", "multi").stdout
    assert "a: Pulling from library/multi" in out and "b: Pulling from library/multi" in out
    assert "Status: Downloaded newer image for multi" in out
    tags = env.docker("images", "--format", "{{.Tag}}", "multi").stdout.split()
    assert sorted(tags) == ["a", "b"]
    assert "Status: Image is up to date for multi" in env.docker("pull", "-a", "multi").stdout
    env.docker("rmi", "multi:a", "multi:b")


def test_rmi_untags_then_deletes_and_frees_content(env: Env) -> None:
    env.docker("pull", "-q", "busybox")
    env.docker("tag", "busybox", "extra:1")
    assert env.docker("rmi", "extra:1").stdout.splitlines() == ["Untagged: extra:1"]
    _forget(env, f"{env.registry.host}/me/bb@{env.busybox.manifest.digest}")
    out = env.docker("rmi", "busybox").stdout.splitlines()
    assert out == ["Untagged: busybox:latest", f"Untagged: busybox@{env.busybox.manifest.digest}",
                   f"Deleted: {env.busybox.config.digest}"]
    assert env.docker("images", "-q").stdout.strip() == ""
    assert env.ctr("content", "ls", "-q").strip() == ""  # collected with the last name

    missing = env.docker("rmi", "nosuch", check=False)
    assert missing.returncode == 1
    assert missing.stderr.strip() == "Error response from daemon: No such image: nosuch:latest"


def test_save_rmi_load_keeps_the_id_and_prune(env: Env, tmp_path: Path) -> None:
    env.docker("pull", "-q", "busybox")
    archive = tmp_path / "x.tar"
    env.docker("save", "-o", str(archive), "busybox")
    _forget(env, "busybox", f"{env.registry.host}/me/bb@{env.busybox.manifest.digest}")
    assert env.docker("images", "-q").stdout.strip() == ""
    loaded = env.docker("load", "-i", str(archive)).stdout
    assert "Loaded image: busybox:latest" in loaded
    assert json.loads(env.docker("image", "inspect", "busybox").stdout)[0]["Id"] == env.busybox.config.digest

    # Moving a tag to another image leaves the old one dangling (only its digest name): prune takes it.
    other = images.with_user(env.busybox, "nobody")
    images.push_built(env.registry.host, "library/other", "latest", other)
    env.docker("pull", "-q", "other")
    env.docker("tag", "busybox", "other")
    dangling = env.docker("images", "-q", "--no-trunc", "--filter", "dangling=true").stdout.split()
    assert dangling == [other.config.digest]
    pruned = env.docker("image", "prune", "-f").stdout
    assert f"deleted: {other.config.digest}" in pruned and "Total reclaimed space" in pruned
    remaining = env.docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    assert sorted(remaining) == ["busybox:latest", "other:latest"]
    # -a: every image no container uses
    env.docker("image", "prune", "-af")
    assert env.docker("images", "-q").stdout.strip() == ""


def test_a_name_moved_away_leaves_its_image_dangling(env: Env, tmp_path: Path) -> None:
    env.docker("pull", "-q", "busybox")
    other = images.with_user(env.busybox, "daemon")
    images.push_built(env.registry.host, "library/solo", "latest", other)
    env.docker("pull", "-q", "solo")
    env.docker("tag", "solo", "only:1")
    env.docker("rmi", "solo")  # now "only:1" is its one name
    env.docker("tag", "busybox", "only:1")  # moved by tag: the image stays, unnamed, as in Docker
    dangling = env.docker("images", "-q", "--no-trunc", "--filter", "dangling=true").stdout.split()
    assert dangling == [other.config.digest]
    env.docker("tag", "busybox", "only:1")  # the same image again: nothing else changes
    assert env.docker("images", "-q", "--no-trunc", "--filter", "dangling=true").stdout.split() == dangling

    # moved by load: an archive that names busybox's image "only:2" while "only:2" is the other image's
    env.docker("tag", "busybox", "only:2")
    archive = tmp_path / "only2.tar"
    env.docker("save", "-o", str(archive), "only:2")
    env.docker("tag", other.config.digest, "only:2")
    assert env.docker("images", "-q", "--filter", "dangling=true").stdout.strip() == ""
    env.docker("load", "-i", str(archive))
    assert env.docker("images", "-q", "--no-trunc", "--filter", "dangling=true").stdout.split() == dangling

    assert env.docker("rmi", other.config.digest).stdout.splitlines() == [f"Deleted: {other.config.digest}"]
    env.docker("rmi", "only:1", "only:2")


def test_login_and_authenticated_pull(env: Env) -> None:
    tokens = start_token_registry({"bob": "hunter2"}, env.registry.base / "data")
    try:
        ok = env.docker("login", "-u", "bob", "--password-stdin", tokens.host, stdin="hunter2\n")
        assert "Login Succeeded" in ok.stdout
        env.docker("pull", "-q", f"{tokens.host}/library/busybox")  # X-Registry-Auth from the CLI's config
        env.docker("rmi", f"{tokens.host}/library/busybox")
        env.docker("logout", tokens.host)
        anonymous = env.docker("pull", f"{tokens.host}/library/busybox:other", check=False)
        assert anonymous.returncode == 1 and "Error response from daemon" in anonymous.stderr
        bad = env.docker("login", "-u", "bob", "--password-stdin", tokens.host, stdin="wrong\n", check=False)
        assert bad.returncode == 1
        assert "wrong username or password" in bad.stderr
    finally:
        tokens.stop()


def test_docker_py_distribution_pull_with_auth_list_save_load(env: Env) -> None:
    client = docker.DockerClient(base_url=f"unix://{env.daemon.docker_socket}", version="1.44", timeout=120)
    tokens = start_token_registry({"bob": "hunter2"}, env.registry.base / "data")
    try:
        data = client.api.inspect_distribution("busybox:latest")
        assert data["Descriptor"]["digest"] == env.busybox.manifest.digest
        assert data["Platforms"] == [{"os": "linux", "architecture": "amd64"}]
        with pytest.raises(docker.errors.NotFound):
            client.api.inspect_distribution(f"{env.registry.host}/nosuch:1")

        repo = f"{tokens.host}/library/busybox"
        assert client.api.inspect_distribution(f"{repo}:latest", auth_config={
            "username": "bob", "password": "hunter2"})["Descriptor"]["digest"] == env.busybox.manifest.digest
        with pytest.raises(docker.errors.NotFound, match="pull access denied"):
            client.images.pull(repo, tag="latest")
        pulled = client.images.pull(repo, tag="latest", auth_config={"username": "bob", "password": "hunter2"})
        assert pulled.id == env.busybox.config.digest
        assert f"{repo}:latest" in pulled.tags
        listed = client.images.list(name=repo)
        assert [i.id for i in listed] == [pulled.id]

        assert pulled.tag(repo, "pushed")
        denied = client.images.push(repo, tag="pushed", stream=True, decode=True)
        assert any("errorDetail" in m for m in denied)  # an in-stream error: the head went out already
        pushed = list(client.images.push(repo, tag="pushed", stream=True, decode=True,
                                         auth_config={"username": "bob", "password": "hunter2"}))
        assert not any("errorDetail" in m for m in pushed), pushed
        assert {"Tag": "pushed", "Digest": env.busybox.manifest.digest,
                "Size": len(env.busybox.manifest.data)} in [m.get("aux") for m in pushed]
        client.images.remove(f"{repo}:pushed")
        assert client.images.list(filters={"dangling": True}) == []

        data = b"".join(pulled.save(named=f"{repo}:latest"))
        client.images.remove(f"{repo}:latest")
        assert client.images.list(name=repo) == []
        [loaded] = client.images.load(data)
        assert loaded.id == pulled.id and f"{repo}:latest" in loaded.tags
        client.images.remove(f"{repo}:latest")
    finally:
        tokens.stop()
        client.close()


def test_errors_are_docker_shaped(env: Env) -> None:
    status, body = env.api("POST", "/v1.53/images/create?fromImage=Not/Valid&tag=latest")
    assert status == 400 and "invalid reference format" in json.loads(body)["message"]
    status, body = env.api("POST", f"/v1.53/images/create?fromImage={env.registry.host}/nosuch&tag=latest")
    assert status == 404 and "not found" in json.loads(body)["message"]

    env.docker("pull", "-q", "busybox")
    other_platform = env.docker("pull", "--platform", "linux/arm64", "busybox", check=False)
    assert other_platform.returncode == 1
    assert "its platform (linux/amd64) does not match the specified platform (linux/arm64)" in other_platform.stderr

    junk = env.config_dir / "junk.tar"
    junk.write_text("not a tarball\n")
    loaded = env.docker("load", "-i", str(junk), check=False)
    assert loaded.returncode == 1 and "archive is not a readable (compressed) tarball" in loaded.stderr

    assert_no_leftovers(env)

    pulled = env.docker("pull", "nosuch/image", check=False)
    assert pulled.returncode == 1 and "Error response from daemon" in pulled.stderr
    searched = env.docker("search", "x", check=False)
    assert searched.returncode == 1
    assert "Error response from daemon" in searched.stderr and "index.docker.io" in searched.stderr
    assert_no_leftovers(env)
