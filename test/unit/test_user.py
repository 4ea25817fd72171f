"""User and group resolution against an image rootfs, with containerd's rules and no escapes."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from pkg.errors import InvalidArgument
from pkg.runtime.user import (
    UserIds,
    parse_group,
    parse_passwd,
    read_rootfs_file,
    resolve_user,
    secure_join,
    user_string,
)

PASSWD = """root:x:0:0:root:/root:/bin/sh
# a comment
broken line
app:x:1000:1001:App:/home/app:/bin/sh
svc:x:2000:2000::/:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
"""
GROUP = """root:x:0:
app:x:1001:app
svc:x:2000:
audio:x:29:app,svc
video:x:44: svc , app
bad:x:notanumber:app
"""


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text(PASSWD)
    (root / "etc" / "group").write_text(GROUP)
    return root


@pytest.mark.parametrize(("user", "expected"), [
    ("", UserIds(0, 0, (0,))),
    ("0", UserIds(0, 0, (0,))),
    ("app", UserIds(1000, 1001, (29, 44, 1001))),
    ("1000", UserIds(1000, 1001, (29, 44, 1001))),
    ("1000:5", UserIds(1000, 5, (5, 29, 44))),
    ("app:svc", UserIds(1000, 2000, (29, 44, 2000))),
    ("svc", UserIds(2000, 2000, (29, 44, 2000))),
    ("4242", UserIds(4242, 0, (0,))),  # a numeric user needs no entry
    ("4242:4343", UserIds(4242, 4343, (4343,))),
])
def test_resolve(rootfs: Path, user: str, expected: UserIds) -> None:
    assert resolve_user(rootfs, user) == expected


def test_supplemental_groups_and_strict_policy(rootfs: Path) -> None:
    assert resolve_user(rootfs, "app", supplemental_groups=[7, 29]) == UserIds(1000, 1001, (7, 29, 44, 1001))
    strict = resolve_user(rootfs, "app", supplemental_groups=[7], merge_image_groups=False)
    assert strict == UserIds(1000, 1001, (7, 1001))


@pytest.mark.parametrize(("user", "match"), [
    ("ghost", "ghost"),
    ("app:ghosts", "ghosts"),
    ("-1", "out of range"),
    ("4294967296", "out of range"),
])
def test_resolve_errors(rootfs: Path, user: str, match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        resolve_user(rootfs, user)


def test_no_files(tmp_path: Path) -> None:
    assert resolve_user(None, "1000:1000") == UserIds(1000, 1000, (1000,))
    assert resolve_user(tmp_path, "1000") == UserIds(1000, 0, (0,))
    with pytest.raises(InvalidArgument):
        resolve_user(None, "app")
    with pytest.raises(InvalidArgument):
        resolve_user(None, "0", supplemental_groups=[-5])


def test_user_string_rules() -> None:
    assert user_string(image_user="app") == "app"
    assert user_string(uid=0, image_user="app") == "0"
    assert user_string(uid=1000, gid=5, image_user="app") == "1000:5"
    assert user_string(username="svc", uid=1000) == "svc"
    assert user_string(username="svc", gid=3) == "svc:3"
    with pytest.raises(InvalidArgument, match="run_as_group"):
        user_string(gid=3, image_user="app")


def test_symlinks_stay_inside_the_rootfs(tmp_path: Path) -> None:
    outside = tmp_path / "host-etc"
    outside.mkdir()
    (outside / "passwd").write_text("evil:x:0:0::/:/bin/sh\n")
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    # Absolute and relative links that would leave the rootfs if followed on the host.
    (root / "etc" / "passwd").symlink_to(str(outside / "passwd"))
    (root / "etc" / "group").symlink_to("../../host-etc/passwd")
    assert read_rootfs_file(root, "/etc/passwd") is None
    assert read_rootfs_file(root, "/etc/group") is None
    with pytest.raises(InvalidArgument):
        resolve_user(root, "evil")


def test_symlinks_inside_the_rootfs_are_followed(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    (root / "data").mkdir(parents=True)
    (root / "data" / "passwd").write_text("app:x:5:6::/:/bin/sh\n")
    (root / "etc").symlink_to("/data")  # absolute: relative to the rootfs, not the host
    assert resolve_user(root, "app") == UserIds(5, 6, (6,))
    assert secure_join(root, "/etc/../../../passwd") == root / "passwd"


def test_symlink_loop(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").symlink_to("passwd")
    with pytest.raises(InvalidArgument, match="symbolic links"):
        read_rootfs_file(root, "/etc/passwd")


def test_not_a_regular_file(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    (root / "etc" / "passwd").mkdir(parents=True)
    assert read_rootfs_file(root, "/etc/passwd") is None
    os.mkfifo(root / "etc" / "group")
    assert read_rootfs_file(root, "/etc/group") is None  # never blocks on a FIFO


def test_parsers_skip_garbage() -> None:
    assert [e.name for e in parse_passwd(PASSWD)] == ["root", "app", "svc", "nobody"]
    groups = {g.name: g for g in parse_group(GROUP)}
    assert "bad" not in groups
    assert groups["video"].members == ("svc", "app")
