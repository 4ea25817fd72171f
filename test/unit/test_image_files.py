"""An image's /etc/passwd and /etc/group read once from a view (pkg.runtime.image_files): users resolve against them
exactly as against the view itself, files that cannot be read or are large are not kept, and the cache is bounded."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from pkg.errors import InvalidArgument
from pkg.runtime import image_files
from pkg.runtime.image_files import ImageFilesCache
from pkg.runtime.user import ImageFiles, resolve_user

PASSWD = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001:App:/home/app:/bin/sh\nsvc:x:2000:2000::/:/bin/false\n"
GROUP = "root:x:0:\napp:x:1001:app\nsvc:x:2000:\naudio:x:29:app,svc\nvideo:x:44: svc , app\n"


def rootfs(tmp_path: Path, passwd: str | None = PASSWD, group: str | None = GROUP) -> Path:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    if passwd is not None:
        (root / "etc" / "passwd").write_text(passwd)
    if group is not None:
        (root / "etc" / "group").write_text(group)
    return root


@pytest.mark.parametrize("user", ["", "0", "app", "1000", "1000:5", "app:svc", "svc", "4242", "4242:4343", "ghost",
                                  "app:nogroup", "svc:audio"])
@pytest.mark.parametrize(("passwd", "group"), [(PASSWD, GROUP), (PASSWD, None), (None, None)])
def test_users_resolve_as_against_the_view(tmp_path: Path, user: str, passwd: str | None, group: str | None) -> None:
    root = rootfs(tmp_path, passwd, group)
    files = image_files.read(root)
    assert files == ImageFiles(passwd=passwd, group=group)

    def outcome(source: Path | ImageFiles) -> object:
        try:
            return resolve_user(source, user, supplemental_groups=[7])
        except InvalidArgument as exc:
            return exc.message

    assert outcome(files) == outcome(root)


def test_a_symlinked_passwd_is_read_inside_the_rootfs(tmp_path: Path) -> None:
    root = rootfs(tmp_path, passwd=None)
    (root / "real").write_text(PASSWD)
    os.symlink("/real", root / "etc" / "passwd")  # absolute: resolved inside the rootfs
    files = image_files.read(root)
    assert files is not None and files.passwd == PASSWD


def test_unreadable_or_large_files_are_not_kept(tmp_path: Path) -> None:
    root = rootfs(tmp_path, passwd="x" * (image_files.MAX_FILE_CHARS + 1))
    assert image_files.read(root) is None
    (root / "etc" / "passwd").unlink()
    os.symlink("loop", root / "etc" / "loop")
    os.symlink("loop", root / "etc" / "passwd")  # ELOOP: an error the view reports every time
    assert image_files.read(root) is None


def test_the_cache_is_bounded_and_keyed_by_snapshotter_and_chain() -> None:
    cache = ImageFilesCache(capacity=2)
    a, b, c = ImageFiles(passwd="a"), ImageFiles(passwd="b"), ImageFiles(passwd="c")
    cache.put("overlayfs", "sha256:a", a)
    cache.put("overlayfs", "sha256:b", b)
    assert cache.get("overlayfs", "sha256:a") is a  # a is now the most recently used
    cache.put("overlayfs", "sha256:c", c)
    assert cache.get("overlayfs", "sha256:b") is None and cache.get("overlayfs", "sha256:a") is a
    assert cache.get("native", "sha256:a") is None
    cache.put("overlayfs", "sha256:d", None)  # nothing read: nothing kept
    cache.put("overlayfs", "", a)  # no chain (an image without layers): not kept
    assert len(cache) == 2
