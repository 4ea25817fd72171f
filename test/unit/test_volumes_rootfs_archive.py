"""docker cp / export / diff building blocks on a fake root filesystem: path resolution that never leaves the
rootfs, tar naming as Docker names it, safe extraction, overlay changes, and the stat header encoding."""
from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import stat
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dockerapi import times
from dockerapi.handlers.archive import go_file_mode, stat_header
from pkg import errors
from pkg.docker.views import rootfs_archive
from pkg.docker.views.rootfs_access import RootfsView, SpecMount
from pkg.docker.views.rootfs_archive import PathStat
from pkg.docker.views.rootfs_changes import Change, ChangeKind, overlay_changes

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chroot and mknod need root")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "rootfs"
    (r / "etc").mkdir(parents=True)
    (r / "etc" / "hostname").write_text("box\n")
    (r / "etc" / "sub").mkdir()
    (r / "etc" / "sub" / "f").write_text("f")
    (r / "tmp").mkdir()
    (r / "ro").mkdir()
    os.symlink("/etc", r / "etc-link")  # absolute: must resolve inside the rootfs
    os.symlink("../../../../../../etc/hostname", r / "tmp" / "escape")
    return r


@pytest.fixture
def host_secret(tmp_path: Path) -> Path:
    secret = tmp_path / "host-secret"
    secret.write_text("host only")
    return secret


def _view(root: Path, readonly: bool = False) -> RootfsView:
    mounts = (SpecMount("/ro", "bind", "/somewhere", True),)
    return RootfsView(root=root, mounts=mounts, live=False, readonly_rootfs=readonly)


async def _read_tar(chunks: AsyncIterator[bytes]) -> dict[str, tarfile.TarInfo]:
    data = b"".join([c async for c in chunks])
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: m for m in tar.getmembers()}


async def _body(data: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(data), 7):
        yield data[i:i + 7]


def _tar(*members: tuple[str, str, bytes | str]) -> bytes:
    """(name, type, content-or-linkname) with type in file/dir/symlink/hardlink."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, payload in members:
            info = tarfile.TarInfo(name)
            info.uid, info.gid = 1234, 4321
            if kind == "file":
                data = payload if isinstance(payload, bytes) else payload.encode()
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE}[kind]
            info.mode = 0o755 if kind == "dir" else 0o777
            info.linkname = payload if isinstance(payload, str) else ""
            tar.addfile(info)
    return buf.getvalue()


# ---------------- stat ----------------
async def test_stat_resolves_inside_the_rootfs(root: Path) -> None:
    st = await rootfs_archive.stat_path(_view(root), "/etc/hostname", "c1")
    assert (st.name, st.size, stat.S_ISREG(st.mode), st.link_target) == ("hostname", 4, True, "")
    link = await rootfs_archive.stat_path(_view(root), "/etc-link", "c1")
    assert stat.S_ISLNK(link.mode) and link.link_target == "/etc"
    through = await rootfs_archive.stat_path(_view(root), "/etc-link/sub", "c1")
    assert stat.S_ISDIR(through.mode) and through.name == "sub"
    escape = await rootfs_archive.stat_path(_view(root), "/tmp/escape", "c1")
    assert escape.link_target == "/etc/hostname"  # ../ above the root stays at the root
    with pytest.raises(errors.NotFound, match="^Could not find the file /nosuch in container c1$"):
        await rootfs_archive.stat_path(_view(root), "/nosuch", "c1")
    with pytest.raises(errors.InvalidArgument):
        await rootfs_archive.stat_path(_view(root), "", "c1")


# ---------------- archive ----------------
@needs_root
@pytest.mark.parametrize(("path", "names"), [
    ("/etc/hostname", {"hostname"}),
    ("/etc/sub", {"sub", "sub/f"}),
    ("/etc/sub/", {"sub", "sub/f"}),
    ("/etc/sub/.", {".", "./f"}),
    ("/etc-link", {"etc-link"}),  # the link itself, not its target
    ("/etc-link/sub", {"sub", "sub/f"}),
])
async def test_tar_names(root: Path, path: str, names: set[str]) -> None:
    members = await _read_tar(rootfs_archive.tar_path(_view(root), path))
    assert set(members) == names
    if path == "/etc-link":
        assert members["etc-link"].issym() and members["etc-link"].linkname == "/etc"


@needs_root
async def test_live_views_skip_kernel_filesystems(root: Path) -> None:
    (root / "proc" / "1").mkdir(parents=True)
    (root / "proc" / "1" / "status").write_text("x")
    view = RootfsView(root=root, mounts=(SpecMount("/proc", "proc", "proc", False),), live=True)
    members = await _read_tar(rootfs_archive.tar_path(view, "/"))
    assert "./proc" in members and "./proc/1" not in members and "./etc/hostname" in members


@needs_root
async def test_export_names_have_no_dot_prefix(root: Path) -> None:
    members = await _read_tar(rootfs_archive.export(root))
    assert {"etc", "etc/hostname", "etc/sub/f", "etc-link", "tmp", "tmp/escape"} <= set(members)


# ---------------- extract ----------------
@needs_root
async def test_extract_writes_inside_the_rootfs(root: Path, host_secret: Path) -> None:
    os.symlink(str(host_secret), root / "tmp" / "victim")  # an absolute link that would point at the host
    data = _tar(("newdir", "dir", b""), ("newdir/a.txt", "file", "hello"), ("newdir/l", "symlink", "a.txt"),
                ("newdir/h", "hardlink", "newdir/a.txt"), ("victim", "file", "replaced"))
    await rootfs_archive.extract(_view(root), "/etc-link/../tmp", "c1", _body(data))
    assert (root / "tmp" / "newdir" / "a.txt").read_text() == "hello"
    assert os.readlink(root / "tmp" / "newdir" / "l") == "a.txt"
    assert os.stat(root / "tmp" / "newdir" / "h").st_ino == os.stat(root / "tmp" / "newdir" / "a.txt").st_ino
    assert os.stat(root / "tmp" / "newdir" / "a.txt").st_uid == 1234  # tar ids kept by default
    # The existing symlink was replaced, never written through.
    assert host_secret.read_text() == "host only"
    assert (root / "tmp" / "victim").read_text() == "replaced" and not (root / "tmp" / "victim").is_symlink()


@needs_root
async def test_extract_through_an_absolute_symlink_stays_inside(root: Path, tmp_path: Path) -> None:
    host_etc = tmp_path / "etc"  # what "/etc" would be if the link were followed on the host side
    host_etc.mkdir()
    await rootfs_archive.extract(_view(root), "/etc-link", "c1", _body(_tar(("x", "file", "in"))))
    assert (root / "etc" / "x").read_text() == "in" and not (host_etc / "x").exists()


@needs_root
async def test_extract_refusals(root: Path) -> None:
    view = _view(root)
    with pytest.raises(errors.InvalidArgument, match="leaves the destination"):
        await rootfs_archive.extract(view, "/tmp", "c1", _body(_tar(("../../evil", "file", "x"))))
    with pytest.raises(errors.NotFound, match="^Could not find the file /nosuch in container c1$"):
        await rootfs_archive.extract(view, "/nosuch", "c1", _body(_tar(("x", "file", "x"))))
    with pytest.raises(errors.InvalidArgument, match="extraction point is not a directory"):
        await rootfs_archive.extract(view, "/etc/hostname", "c1", _body(_tar(("x", "file", "x"))))
    with pytest.raises(errors.InvalidArgument, match="cannot overwrite directory"):
        await rootfs_archive.extract(view, "/etc", "c1", _body(_tar(("sub", "file", "x"))),
                                     no_overwrite_dir_non_dir=True)
    with pytest.raises(errors.InvalidArgument, match="cannot overwrite non-directory"):
        await rootfs_archive.extract(view, "/etc", "c1", _body(_tar(("hostname", "dir", b""))),
                                     no_overwrite_dir_non_dir=True)
    with pytest.raises(errors.PermissionDenied, match="mounted volume is marked read-only"):
        await rootfs_archive.extract(view, "/ro", "c1", _body(_tar(("x", "file", "x"))))
    with pytest.raises(errors.PermissionDenied, match="container rootfs is marked read-only"):
        await rootfs_archive.extract(_view(root, readonly=True), "/tmp", "c1", _body(_tar(("x", "file", "x"))))
    with pytest.raises(errors.InvalidArgument, match="invalid tar archive"):
        await rootfs_archive.extract(view, "/tmp", "c1", _body(b"not a tar at all" * 64))
    assert not (root / "tmp" / "x").exists() and (root / "etc" / "sub").is_dir()


@needs_root
async def test_extract_copy_uid_gid(root: Path) -> None:
    await rootfs_archive.extract(_view(root), "/tmp", "c1", _body(_tar(("owned", "file", "x"))), chown=(7, 8))
    st = os.stat(root / "tmp" / "owned")
    assert (st.st_uid, st.st_gid) == (7, 8)


# ---------------- changes ----------------
@needs_root
def test_overlay_changes(tmp_path: Path) -> None:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    for d in ("etc", "usr/lib", "var/log"):
        (lower / d).mkdir(parents=True)
    (lower / "etc" / "passwd").write_text("root")
    (lower / "etc" / "gone").write_text("x")
    (lower / "usr" / "lib" / "old").write_text("x")
    # The container: modified /etc/passwd, deleted /etc/gone, added /var/log/new, runc made /etc/hostname.
    (upper / "etc").mkdir(parents=True)
    os.chmod(upper / "etc", os.stat(lower / "etc").st_mode)
    (upper / "etc" / "passwd").write_text("root+")
    os.mknod(upper / "etc" / "gone", stat.S_IFCHR | 0o000, 0)
    (upper / "etc" / "hostname").write_text("")
    (upper / "var" / "log").mkdir(parents=True)
    for d in ("var", "var/log"):
        os.chmod(upper / d, os.stat(lower / d).st_mode)
    (upper / "var" / "log" / "new").write_text("n")
    (upper / "added-dir" / "f").parent.mkdir()
    (upper / "added-dir" / "f").write_text("f")
    assert overlay_changes(str(upper), [str(lower)]) == [
        Change("/added-dir", ChangeKind.ADDED),
        Change("/added-dir/f", ChangeKind.ADDED),
        Change("/etc", ChangeKind.MODIFIED),
        Change("/etc/gone", ChangeKind.DELETED),
        Change("/etc/passwd", ChangeKind.MODIFIED),
        Change("/var/log", ChangeKind.MODIFIED),
        Change("/var/log/new", ChangeKind.ADDED),
    ]


# ---------------- the stat header ----------------
def test_stat_header_uses_go_file_modes() -> None:
    assert go_file_mode(stat.S_IFDIR | 0o755) == (1 << 31) | 0o755
    assert go_file_mode(stat.S_IFLNK | 0o777) == (1 << 27) | 0o777
    assert go_file_mode(stat.S_IFREG | stat.S_ISUID | 0o4755) == (1 << 23) | 0o755
    assert go_file_mode(stat.S_IFCHR | 0o666) == (1 << 26) | (1 << 21) | 0o666
    assert times.rfc3339(1_700_000_000_500_000_000) == "2023-11-14T22:13:20.5Z"
    assert times.rfc3339(1_700_000_000_000_000_000) == "2023-11-14T22:13:20Z"
    header = stat_header(PathStat("f", 3, stat.S_IFREG | 0o644, 0, ""))
    assert json.loads(base64.b64decode(header)) == {"name": "f", "size": 3, "mode": 0o644,
                                                    "mtime": "1970-01-01T00:00:00Z", "linkTarget": ""}


@needs_root
async def test_abandoned_tar_stream_ends_its_helper(tmp_path: Path) -> None:
    """A consumer that stops after one chunk (a client gone mid-export) and closes the stream: the helper is
    killed and reaped at once, even with its stdout paused on a full buffer (asyncio's wait() needs EOF)."""
    root = tmp_path / "rootfs"
    root.mkdir()

    def fill() -> None:  # 16 MiB of random bytes: ~0.1 s of CPU, which the loop guard counts if done on the loop
        for i in range(4):
            (root / f"big{i}").write_bytes(os.urandom(4 * 1024 * 1024))

    await asyncio.to_thread(fill)
    for _ in range(5):
        stream = rootfs_archive.export(root)
        first = await anext(stream)
        assert first
        # The helper fills the pipe and the reader's buffer until asyncio pauses reading the pipe: the state
        # the fuzzer's interrupted exports hung in (seen through asyncio's transport, the one place it shows).
        proc = stream.ag_frame.f_locals["proc"]  # type: ignore[attr-defined]
        pipe = proc._transport.get_pipe_transport(1)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while pipe.is_reading() and loop.time() < deadline:
            await asyncio.sleep(0.02)
        assert not pipe.is_reading()
        await asyncio.wait_for(stream.aclose(), 10)
        assert proc.returncode is not None
