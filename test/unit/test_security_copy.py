"""Escapes through file copies (issue 15): a volume copy-up racing a symlink swapper, and the docker cp helper
loading a container's NSS module. Each test would fail on the code before the fix."""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pkg.docker.views import rootfs_archive
from pkg.docker.views.rootfs_access import RootfsView
from pkg.runtime.copy_up import seed_volume

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chroot needs root")

NSS_MODULE = r"""
#include <stdio.h>
__attribute__((constructor)) static void ran(void) {
    FILE *f = fopen("/nss-ran", "w");
    if (f) { fputs("the container's code ran in the helper\n", f); fclose(f); }
}
"""


def _image_tree(root: Path, dirs: int) -> None:
    for i in range(dirs):
        d = root / "data" / f"d{i}"
        d.mkdir(parents=True)
        for j in range(5):
            (d / f"f{j}").write_text("image content\n")
        (d / "sub").mkdir()
        (d / "sub" / "deep").write_text("deep\n")


SWAPPER = """
import os, sys
volume, outside = sys.argv[1], sys.argv[2]
open(volume + ".ready", "w").close()
while not os.path.exists(volume + ".stop"):
    try:
        for entry in os.scandir(volume):
            if entry.is_dir(follow_symlinks=False):
                os.rename(entry.path, entry.path + ".moved")
                os.symlink(outside, entry.path)
    except OSError:
        pass
"""


def test_copy_up_never_follows_a_swapped_symlink(tmp_path: Path) -> None:
    """Another container shares the volume and swaps each new directory for a symlink to a host directory
    (in a process of its own, truly in parallel): the copy may fail, but nothing lands in (or is chmod'ed
    in) the host directory."""
    rootfs, outside = tmp_path / "rootfs", tmp_path / "host-etc"
    _image_tree(rootfs, 40)
    outside.mkdir(mode=0o755)
    swaps = 0
    for attempt in range(10):
        volume = tmp_path / f"vol{attempt}"
        volume.mkdir()
        swapper = subprocess.Popen(["python3", "-c", SWAPPER, str(volume), str(outside)])
        try:
            deadline = time.monotonic() + 30
            while not Path(str(volume) + ".ready").exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            with contextlib.suppress(OSError):  # a lost race is an error, never a write outside
                seed_volume(rootfs, "/data", volume)
        finally:
            Path(str(volume) + ".stop").touch()
            swapper.wait(timeout=30)
        swaps += sum(1 for p in volume.iterdir() if p.name.endswith(".moved"))
        assert list(outside.iterdir()) == [], f"attempt {attempt} wrote through a symlink"
        assert outside.stat().st_mode & 0o7777 == 0o755
    assert swaps > 0, "the swapper never ran during a copy: the test proved nothing"


def test_copy_up_copies_owners_modes_links_and_fifos(tmp_path: Path) -> None:
    rootfs, volume = tmp_path / "rootfs", tmp_path / "vol"
    (rootfs / "data" / "dir").mkdir(parents=True)
    (rootfs / "data" / "dir" / "f").write_text("x")
    os.chmod(rootfs / "data" / "dir" / "f", 0o640)
    os.chmod(rootfs / "data" / "dir", 0o751)
    os.symlink("/etc/passwd", rootfs / "data" / "abs-link")
    os.mkfifo(rootfs / "data" / "fifo")
    os.chmod(rootfs / "data" / "fifo", 0o620)
    volume.mkdir()
    seed_volume(rootfs, "/data", volume)
    assert (volume / "dir" / "f").read_text() == "x"
    assert (volume / "dir" / "f").stat().st_mode & 0o7777 == 0o640
    assert (volume / "dir").stat().st_mode & 0o7777 == 0o751
    assert os.readlink(volume / "abs-link") == "/etc/passwd"
    assert (volume / "fifo").lstat().st_mode & 0o7777 == 0o620


def _hostile_root(tmp_path: Path) -> Path:
    """A container root whose nsswitch.conf names an NSS module that leaves /nss-ran when loaded."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the NSS module")
    root = tmp_path / "rootfs"
    for d in ("etc", "tmp", "lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu"):
        (root / d).mkdir(parents=True)
    source = tmp_path / "evil.c"
    source.write_text(NSS_MODULE)
    module = root / "lib" / "x86_64-linux-gnu" / "libnss_evil.so.2"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(module), str(source)], check=True)
    shutil.copy(module, root / "usr" / "lib" / "x86_64-linux-gnu" / "libnss_evil.so.2")
    (root / "etc" / "nsswitch.conf").write_text("passwd: evil\ngroup: evil\n")
    (root / "etc" / "hostname").write_text("box\n")
    os.chown(root / "etc" / "hostname", 4321, 4321)
    return root


async def _collect(chunks: object) -> bytes:
    out = b""
    async for chunk in chunks:  # type: ignore[attr-defined]
        out += chunk
    return out


@needs_root
async def test_cp_helper_never_loads_the_containers_nss_modules(tmp_path: Path) -> None:
    root = _hostile_root(tmp_path)
    view = RootfsView(root=root, mounts=(), live=False)
    archive = await _collect(rootfs_archive.tar_path(view, "/etc/hostname"))
    assert b"hostname" in archive
    await rootfs_archive.extract(view, "/tmp", "ctr", _once(archive), chown=None)
    assert (root / "tmp" / "hostname").stat().st_uid == 4321  # numeric owner kept
    await _collect(rootfs_archive.export(root))
    assert not (root / "nss-ran").exists(), "the container's NSS module ran as host root"


@needs_root
def test_cp_helper_runs_without_host_network_or_admin_caps(tmp_path: Path) -> None:
    """What a module could do if one did run: the helper has its own network namespace, no_new_privs and no
    CAP_SYS_ADMIN/NET_ADMIN/SYS_CHROOT/SYS_MODULE (a probe runs the helper's own steps, then reads /proc)."""
    root = tmp_path / "rootfs"
    root.mkdir()
    script = tmp_path / "probe.py"
    script.write_text(
        "import sys, os\n"
        f"sys.path.insert(0, {str(Path(rootfs_archive.HELPER).parent)!r})\n"
        "import rootfs_tar\n"
        "rootfs_tar._isolate(); os.chroot(sys.argv[1]); os.chdir('/'); rootfs_tar._drop_privileges()\n"
        "print(open('/proc/self/status').read() if os.path.exists('/proc/self/status') else '')\n"
        "print('NETNS', os.readlink('/proc/self/ns/net'))\n")
    (root / "proc").mkdir()
    # Mount a proc and sysfs of the helper's own view: the probe reads them after the chroot.
    out = subprocess.run(
        ["unshare", "--mount", "sh", "-c",
         f"mount -t proc proc {root}/proc && python3 -I {script} {root} && true"],
        capture_output=True, text=True, timeout=60, check=True).stdout
    cap_eff = int(next(line.split()[1] for line in out.splitlines() if line.startswith("CapEff:")), 16)
    cap_bnd = int(next(line.split()[1] for line in out.splitlines() if line.startswith("CapBnd:")), 16)
    for cap in (21, 12, 18, 16):  # SYS_ADMIN, NET_ADMIN, SYS_CHROOT, SYS_MODULE
        assert not cap_eff & (1 << cap) and not cap_bnd & (1 << cap)
    assert "NoNewPrivs:\t1" in out
    assert f"NETNS {os.readlink('/proc/self/ns/net')}" not in out and "NETNS net:[" in out


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data
