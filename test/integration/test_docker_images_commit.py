"""docker commit, docker import and rmi's container conflicts, with the real docker CLI (containers of the engine)."""
from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from lib.daemon import DaemonProcess
from lib.docker import docker_daemon
from lib.registry import Registry


class Docker:
    def __init__(self, daemon: DaemonProcess, config_dir: Path) -> None:
        self.daemon = daemon
        self.env = {**daemon.docker_env(), "DOCKER_CONFIG": str(config_dir)}

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(["docker", *args], env=self.env, capture_output=True, text=True, timeout=120)
        if check and out.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
        return out


@pytest.fixture(scope="module")
def docker(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Docker]:
    daemons = docker_daemon(registry)  # busybox pulled; torn down with its network on close
    try:
        yield Docker(next(daemons).daemon, tmp_path_factory.mktemp("docker-config"))
    finally:
        daemons.close()


def test_commit_makes_a_runnable_image_with_the_changes(docker: Docker) -> None:
    docker("run", "--name", "src", "busybox", "sh", "-c", "echo hello > /greeting && rm /bin/true")
    image_id = docker("commit", "-c", 'CMD ["cat", "/greeting"]', "-c", "ENV FOO=bar", "-c", "LABEL a=b",
                      "-c", "EXPOSE 8080", "-m", "my comment", "-a", "me <me@example.com>",
                      "src", "committed:1").stdout.strip()
    [inspected] = json.loads(docker("image", "inspect", "committed:1").stdout)
    assert inspected["Id"] == image_id
    assert (inspected["Author"], inspected["Comment"]) == ("me <me@example.com>", "my comment")
    config = inspected["Config"]
    assert config["Cmd"] == ["cat", "/greeting"]
    assert "FOO=bar" in config["Env"] and config["Labels"] == {"a": "b"}
    assert config["ExposedPorts"] == {"8080/tcp": {}}
    [base] = json.loads(docker("image", "inspect", "busybox").stdout)
    assert inspected["RootFS"]["Layers"][:-1] == base["RootFS"]["Layers"]  # one layer on top
    history = docker("history", "--no-trunc", "--format", "{{.CreatedBy}}|{{.Comment}}", "committed:1").stdout
    steps = history.splitlines()
    assert steps[0] == "sh -c echo hello > /greeting && rm /bin/true|my comment"
    assert len(steps) == len(base["RootFS"]["Layers"]) + 1
    assert inspected["Parent"] == base["Id"]  # as moby records a commit's parent
    ids = docker("history", "--no-trunc", "--format", "{{.ID}}", "committed:1").stdout.splitlines()
    assert ids == [image_id, base["Id"]]

    assert docker("run", "--rm", "committed:1").stdout == "hello\n"
    gone = docker("run", "--rm", "committed:1", "ls", "/bin/true", check=False)
    assert gone.returncode != 0  # the deletion travelled as a whiteout
    docker("rm", "src")

    # a container that changed nothing (never started): an empty layer, sized as its base
    docker("create", "--name", "idle", "busybox", "true")
    try:
        docker("commit", "idle", "idle:1")
        [idle] = json.loads(docker("image", "inspect", "idle:1").stdout)
        assert len(idle["RootFS"]["Layers"]) == len(base["RootFS"]["Layers"]) + 1
        assert base["Size"] <= idle["Size"] < base["Size"] + 65536
        assert docker("run", "--rm", "idle:1", "echo", "ok").stdout == "ok\n"
    finally:
        docker("rm", "-f", "idle", check=False)
    docker("rmi", "idle:1")

    missing = docker("commit", "nosuch", check=False)
    assert missing.returncode == 1 and "No such container: nosuch" in missing.stderr


def test_rmi_conflicts_with_containers(docker: Docker) -> None:
    docker("tag", "busybox", "held:1")
    image_id = json.loads(docker("image", "inspect", "held:1").stdout)[0]["Id"]
    short = image_id.split(":")[1][:12]
    try:
        stopped = docker("create", "--name", "stopped-user", "held:1", "true").stdout.strip()
        docker("rmi", "busybox")  # another name of the same image: just untagged
        refused = docker("rmi", "held:1", check=False)
        assert refused.returncode == 1
        assert refused.stderr.strip() == (
            f'Error response from daemon: conflict: unable to remove repository reference "held:1" (must force) - '
            f"container {stopped[:12]} is using its referenced image {short}")
        refused = docker("rmi", short, check=False)
        assert refused.stderr.strip() == (
            f"Error response from daemon: conflict: unable to delete {short} (must be forced) - image is being used "
            f"by stopped container {stopped[:12]}")

        running = docker("run", "-d", "--name", "running-user", "held:1", "sleep", "300").stdout.strip()
        refused = docker("rmi", "-f", short, check=False)
        assert refused.returncode == 1
        assert refused.stderr.strip() == (
            f"Error response from daemon: conflict: unable to delete {short} (cannot be forced) - image is being "
            f"used by running container {running[:12]}")
        # forced by name: the name goes, the image stays (unnamed) for the running container
        assert docker("rmi", "-f", "held:1").stdout.splitlines() == ["Untagged: held:1"]
        listed = docker("images", "-a", "--no-trunc", "--format", "{{.ID}} {{.Repository}}:{{.Tag}}").stdout
        assert f"{image_id} <none>:<none>" in listed.splitlines()
    finally:
        docker("rm", "-f", "running-user", "stopped-user", check=False)
    assert docker("rmi", short).stdout.splitlines() == [f"Deleted: {image_id}"]


@pytest.mark.parametrize("compress", ["", "gzip", "xz"])
def test_import_a_filesystem_tarball(docker: Docker, tmp_path: Path, compress: str) -> None:
    root = tmp_path / "rootfs"
    (root / "bin").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "bin" / "busybox").write_bytes(Path("/bin/busybox").read_bytes())
    (root / "bin" / "busybox").chmod(0o755)
    (root / "etc" / "msg").write_text("imported\n")
    archive = tmp_path / "rootfs.tar"
    subprocess.run(["tar", "-C", str(root), "-cf", str(archive), "."], check=True)
    if compress:
        subprocess.run([compress, "-f", str(archive)], check=True)
        archive = archive.with_name(archive.name + {"gzip": ".gz", "xz": ".xz"}[compress])
    name = f"imported:{compress or 'plain'}"
    image_id = docker("import", "-c", 'CMD ["/bin/busybox", "cat", "/etc/msg"]', "-m", "hand made",
                      str(archive), name).stdout.strip()
    [inspected] = json.loads(docker("image", "inspect", name).stdout)
    assert inspected["Id"] == image_id and inspected["Comment"] == "hand made"
    assert len(inspected["RootFS"]["Layers"]) == 1
    assert docker("run", "--rm", name).stdout == "imported\n"
    docker("rmi", name)


def test_import_refuses_what_is_not_a_tarball(docker: Docker, tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar"
    junk.write_text("not a tarball\n")
    refused = docker("import", str(junk), "junk:1", check=False)
    assert refused.returncode == 1
    assert "Error response from daemon: the imported archive is not a (compressed) tarball" in refused.stderr
    assert "junk" not in docker("images", "--format", "{{.Repository}}").stdout
    sock = docker.daemon.state / "containerd" / "containerd.sock"
    ctr = ["ctr", "-a", str(sock), "-n", "narwhal-docker"]
    leases = subprocess.run([*ctr, "leases", "ls", "-q"], capture_output=True, text=True, check=True).stdout
    assert leases.split() == []  # the import's lease went, and its blob with it
    spool = docker.daemon.root / "tmp"
    assert not spool.exists() or list(spool.iterdir()) == []
