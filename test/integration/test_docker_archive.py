"""docker cp, docker diff and docker export with the real docker CLI and docker-py, on running and stopped
containers; paths resolve inside the container (its symlinks never reach the host)."""
from __future__ import annotations

import io
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from lib.daemon import mounts_under
from lib.docker import DockerDaemon, docker_daemon
from lib.registry import Registry


@pytest.fixture(scope="module")
def dd(registry: Registry) -> Iterator[DockerDaemon]:
    for d in docker_daemon(registry):
        yield d
        d.rm_all()


def _tar_names(data: bytes) -> set[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return set(tar.getnames())


def _pipe(dd: DockerDaemon, *args: str) -> bytes:
    proc = subprocess.run(["docker", *args], env=dd.daemon.docker_env(), capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_running_container_cp_diff_export(dd: DockerDaemon, tmp_path: Path) -> None:
    cid = dd.out("run", "-d", "--name", "arch-run", "busybox", "sh", "-c",
                 "echo new > /tmp/new && rm /bin/ls && ln -s /etc /tmp/etclink && touch /tmp/ready && sleep 300")
    assert dd.out("exec", "arch-run", "sh", "-c", "while [ ! -e /tmp/ready ]; do sleep 0.1; done; echo ok") == "ok"
    assert dd.out("diff", "arch-run").splitlines() == [
        "C /bin", "D /bin/ls", "C /tmp", "A /tmp/etclink", "A /tmp/new", "A /tmp/ready"]

    # Host -> container, container -> host.
    (tmp_path / "file.txt").write_text("from the host\n")
    dd.out("cp", str(tmp_path / "file.txt"), "arch-run:/tmp/")
    assert dd.out("exec", "arch-run", "cat", "/tmp/file.txt") == "from the host"
    dd.out("cp", "arch-run:/etc/hostname", str(tmp_path / "hostname"))
    assert (tmp_path / "hostname").read_text().strip() == cid[:12]
    assert {"tmp", "tmp/new", "tmp/file.txt", "tmp/etclink"} <= _tar_names(_pipe(dd, "cp", "arch-run:/tmp", "-"))

    # Through the container's absolute symlink: its /etc, never the host's.
    (tmp_path / "probe").write_text("probe")
    dd.out("cp", str(tmp_path / "probe"), "arch-run:/tmp/etclink/")
    assert dd.out("exec", "arch-run", "cat", "/etc/probe") == "probe"
    assert not Path("/etc/probe").exists()
    dd.out("cp", "arch-run:/tmp/etclink/hostname", str(tmp_path / "via-link"))
    assert (tmp_path / "via-link").read_text().strip() == cid[:12]

    names = _tar_names(_pipe(dd, "export", "arch-run"))
    assert {"bin/busybox", "etc/passwd", "tmp/new"} <= names and "bin/ls" not in names
    assert not any(n.startswith(("proc/", "sys/")) for n in names)


def test_stopped_container_cp_and_errors(dd: DockerDaemon, tmp_path: Path) -> None:
    dd.out("create", "--name", "arch-stopped", "busybox", "cat", "/etc/copied")
    (tmp_path / "copied").write_text("copied while stopped\n")
    dd.out("cp", str(tmp_path / "copied"), "arch-stopped:/etc/copied")
    dd.out("cp", "arch-stopped:/etc/copied", str(tmp_path / "back"))
    assert (tmp_path / "back").read_text() == "copied while stopped\n"
    assert dd.out("start", "-a", "arch-stopped") == "copied while stopped"
    assert dd.out("diff", "arch-stopped").splitlines() == ["C /etc", "A /etc/copied"]

    missing = dd.docker("cp", "arch-stopped:/nosuch", str(tmp_path), check=False)
    assert missing.returncode != 0 and "Could not find the file /nosuch in container arch-stopped" in missing.stderr
    no_dir = dd.docker("cp", str(tmp_path / "copied"), "arch-stopped:/nosuchdir/x", check=False)
    assert no_dir.returncode != 0
    no_container = dd.docker("cp", "nosuch-container:/etc/passwd", str(tmp_path), check=False)
    assert no_container.returncode != 0 and "No such container: nosuch-container" in no_container.stderr


def test_docker_py_archive_round_trip(dd: DockerDaemon) -> None:
    client = docker.DockerClient(base_url=f"unix://{dd.daemon.docker_socket}")
    try:
        container = client.containers.create("busybox", "sleep 300", name="arch-py")
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            info = tarfile.TarInfo("dir/hello")
            info.size, info.mode, info.uid, info.gid = 5, 0o640, 1000, 1000
            tar.addfile(info, io.BytesIO(b"hello"))
        assert container.put_archive("/tmp", buf.getvalue())
        chunks, stat = container.get_archive("/tmp/dir/hello")
        assert stat["name"] == "hello" and stat["size"] == 5 and stat["mode"] == 0o640
        with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tar:
            member = tar.getmember("hello")
            assert (member.uid, member.gid, member.mode) == (1000, 1000, 0o640)
            extracted = tar.extractfile(member)
            assert extracted is not None and extracted.read() == b"hello"
        _, dir_stat = container.get_archive("/tmp/dir")
        assert dir_stat["mode"] & (1 << 31)  # Go's os.ModeDir
        assert {"Path": "/tmp/dir/hello", "Kind": 1} in container.diff()
        with pytest.raises(docker.errors.NotFound):
            container.get_archive("/nosuch")
        container.remove(force=True)
    finally:
        client.close()


def test_nothing_left_mounted(dd: DockerDaemon) -> None:
    """Views of stopped containers are unmounted and their dirs removed once each call ends."""
    dd.rm_all()
    views = dd.daemon.state / "docker" / "views"
    assert [m for m in mounts_under(dd.daemon.base) if m.startswith(str(views))] == []
    assert not views.exists() or list(views.iterdir()) == []
