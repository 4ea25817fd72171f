"""pkg.rootpath: the one symlink walk under a root that layer_apply.root_path and user.secure_join share."""
from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from pkg.images import layer_apply
from pkg.rootpath import resolve_in_root
from pkg.runtime.user import secure_join


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    (r / "d" / "e").mkdir(parents=True)
    (r / "d" / "f").write_text("")
    return r


def _chain(root: Path, n: int) -> None:
    """l0 -> l1 -> ... -> l<n-1> -> d: n links to follow from l0."""
    for i in range(n):
        (root / f"l{i}").symlink_to(f"l{i + 1}" if i < n - 1 else "d")


def test_plain_and_lexical_parts(root: Path) -> None:
    assert resolve_in_root(root, "d/e", limit=40) == ["d", "e"]
    assert resolve_in_root(root, "//d/./e//", limit=40) == ["d", "e"]
    assert resolve_in_root(root, "", limit=40) == []
    assert resolve_in_root(root, "/", limit=40) == []
    # A missing component ends the resolution lexically, ".." included.
    assert resolve_in_root(root, "missing/x/../y", limit=40) == ["missing", "y"]


def test_dotdot_never_climbs_above_the_root(root: Path) -> None:
    assert resolve_in_root(root, "../../../etc/passwd", limit=40) == ["etc", "passwd"]
    assert resolve_in_root(root, "d/../../..", limit=40) == []
    (root / "up").symlink_to("../../../../..")
    assert resolve_in_root(root, "up/etc", limit=40) == ["etc"]


def test_absolute_links_restart_from_the_root(root: Path) -> None:
    (root / "d" / "abs").symlink_to("/d/e")
    (root / "slash").symlink_to("/")
    (root / "host").symlink_to(str(root.parent))  # a host path is read as a path under the root
    assert resolve_in_root(root, "d/abs/x", limit=40) == ["d", "e", "x"]
    assert resolve_in_root(root, "slash/slash/d", limit=40) == ["d"]
    assert resolve_in_root(root, "host", limit=40) == [p for p in str(root.parent).split("/") if p]


def test_relative_links_resolve_from_their_directory(root: Path) -> None:
    (root / "d" / "e" / "rel").symlink_to("../f")
    (root / "d" / "dangling").symlink_to("nowhere/x")
    assert resolve_in_root(root, "d/e/rel", limit=40) == ["d", "f"]
    assert resolve_in_root(root, "d/dangling", limit=40) == ["d", "nowhere", "x"]


def test_a_loop_is_eloop(root: Path) -> None:
    (root / "a").symlink_to("b")
    (root / "b").symlink_to("a")
    with pytest.raises(OSError) as err:
        resolve_in_root(root, "a/x", limit=40)
    assert err.value.errno == errno.ELOOP
    assert err.value.strerror == "too many levels of symbolic links"
    assert err.value.filename in (str(root / "a"), str(root / "b"))


def test_the_limit_counts_links_on_one_walk(root: Path) -> None:
    _chain(root, 5)
    assert resolve_in_root(root, "l0/e", limit=5) == ["d", "e"]
    with pytest.raises(OSError) as err:
        resolve_in_root(root, "l0/e", limit=4, loop_message="too many links")
    assert (err.value.errno, err.value.strerror, err.value.filename) == (errno.ELOOP, "too many links",
                                                                          str(root / "l4"))
    # Links of separate components add up.
    assert resolve_in_root(root, "l2/../l2", limit=6) == ["d"]
    with pytest.raises(OSError):
        resolve_in_root(root, "l2/../l2", limit=5)


def test_other_errors_propagate(root: Path) -> None:
    with pytest.raises(NotADirectoryError):
        resolve_in_root(root, "d/f/x", limit=40)


def test_each_caller_keeps_its_limit_type_and_error(root: Path) -> None:
    _chain(root, 41)
    assert secure_join(root, "/l1/e") == root / "d" / "e"  # 40 links: securejoin's limit
    with pytest.raises(OSError, match="too many levels of symbolic links"):
        secure_join(root, "/l0/e")  # 41
    assert layer_apply.root_path(str(root), "l0/e") == str(root / "d" / "e")  # within fs.RootPath's 255
    assert layer_apply.root_path(str(root), "") == str(root)
    assert isinstance(secure_join(root, "d"), Path)
    (root / "x").symlink_to("x")
    with pytest.raises(OSError, match="too many levels of symbolic links"):
        secure_join(root, "x")
    with pytest.raises(OSError, match="too many links"):
        layer_apply.root_path(str(root), "x")


def test_a_root_given_as_str_or_path_resolves_alike(root: Path) -> None:
    (root / "d" / "e" / "rel").symlink_to("../f")
    assert resolve_in_root(str(root), "d/e/rel", limit=40) == resolve_in_root(root, "d/e/rel", limit=40)
    assert os.path.join(root, *resolve_in_root(root, "d/e/rel", limit=40)) == str(root / "d" / "f")
