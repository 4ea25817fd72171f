"""Hostile containers against docker cp / export / volume copy-up (issue 15): nothing of the container runs as
host root, no device node or FIFO is written through or waited on, and no view is left mounted."""
from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from lib.daemon import mounts_under
from lib.docker import DockerDaemon, docker_daemon
from lib.registry import Registry

NSS_MODULE = r"""
#include <stdio.h>
#include <net/if.h>
__attribute__((constructor)) static void ran(void) {
    FILE *f = fopen("/nss-ran", "w");
    if (!f) return;
    struct if_nameindex *ifs = if_nameindex();
    for (struct if_nameindex *i = ifs; i && i->if_index; i++) fprintf(f, "%s\n", i->if_name);
    fclose(f);
}
"""


@pytest.fixture(scope="module")
def dd(registry: Registry) -> Iterator[DockerDaemon]:
    for d in docker_daemon(registry):
        yield d
        d.rm_all()


def _nss_files(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the NSS module")
    source = tmp_path / "evil.c"
    source.write_text(NSS_MODULE)
    module = tmp_path / "libnss_evil.so.2"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(module), str(source)], check=True)
    conf = tmp_path / "nsswitch.conf"
    conf.write_text("passwd: evil\ngroup: evil\n")
    return module, conf


def _arm(dd: DockerDaemon, name: str, tmp_path: Path) -> None:
    module, conf = _nss_files(tmp_path)
    dd.out("exec", name, "mkdir", "-p", "/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu")
    dd.out("cp", str(module), f"{name}:/lib/x86_64-linux-gnu/libnss_evil.so.2")
    dd.out("cp", str(module), f"{name}:/usr/lib/x86_64-linux-gnu/libnss_evil.so.2")
    dd.out("cp", str(conf), f"{name}:/etc/nsswitch.conf")  # last: the copies above must not trip it
    dd.out("exec", name, "chown", "1234:1234", "/etc/hostname")


def test_cp_and_export_never_run_the_containers_nss_module(dd: DockerDaemon, tmp_path: Path) -> None:
    """field-notes.md "A container's code in the docker cp helper": the module would write /nss-ran."""
    dd.out("run", "-d", "--name", "nss-evil", "busybox", "sleep", "600")
    _arm(dd, "nss-evil", tmp_path)
    dd.out("cp", "nss-evil:/etc/hostname", str(tmp_path / "hostname"))
    (tmp_path / "in").write_text("into the container\n")
    dd.out("cp", str(tmp_path / "in"), "nss-evil:/tmp/in")
    export = subprocess.run(["docker", "export", "nss-evil"], env=dd.daemon.docker_env(), capture_output=True,
                            timeout=120)
    assert export.returncode == 0, export.stderr
    assert dd.docker("exec", "nss-evil", "ls", "/nss-ran", check=False).returncode != 0
    # Stopped: the view is a mounted snapshot, same helper.
    dd.out("stop", "-t", "0", "nss-evil")
    dd.out("cp", "nss-evil:/etc/hostname", str(tmp_path / "hostname2"))
    dd.out("cp", str(tmp_path / "in"), "nss-evil:/tmp/in2")
    dd.out("start", "nss-evil")
    assert dd.docker("exec", "nss-evil", "ls", "/nss-ran", check=False).returncode != 0
    assert not Path("/nss-ran").exists()
    dd.out("rm", "-f", "nss-evil")


def test_cp_into_a_container_racing_fifos_and_device_nodes(dd: DockerDaemon, tmp_path: Path) -> None:
    """A container with MKNOD keeps replacing the target with a FIFO or /dev/null's device node: every copy
    ends (none waits on the FIFO) and what a finished copy leaves is a regular file or the racer's node."""
    dd.out("run", "-d", "--name", "mknod-race", "--cap-add", "MKNOD", "busybox", "sh", "-c",
           "while true; do rm -f /tmp/t; mkfifo /tmp/t; rm -f /tmp/t; mknod /tmp/t c 1 3; done")
    payload = tmp_path / "t"
    payload.write_text("payload\n")
    for _ in range(15):
        start = time.monotonic()
        proc = dd.docker("cp", str(payload), "mknod-race:/tmp/", check=False, timeout=60)
        assert time.monotonic() - start < 60
        assert proc.returncode == 0 or proc.stderr
        out = dd.docker("cp", "mknod-race:/tmp/t", "-", check=False, timeout=60)
        assert out.returncode in (0, 1)
    dd.out("rm", "-f", "mknod-race")


def test_no_view_left_mounted(dd: DockerDaemon) -> None:
    dd.rm_all()
    views = dd.daemon.state / "docker" / "views"
    assert [m for m in mounts_under(dd.daemon.base) if m.startswith(str(views))] == []
