"""Go's path.Match semantics for the images reference filter (the cases of Go's own match_test.go), and
that a pathological pattern costs linear-ish time, never a backtracking blow-up."""
from __future__ import annotations

import time

import pytest

from dockerapi import pathmatch
from dockerapi.handlers import images_json
from pkg import errors


@pytest.mark.parametrize(("pattern", "name", "hit"), [
    ("abc", "abc", True), ("*", "abc", True), ("*c", "abc", True), ("a*", "a", True), ("a*", "abc", True),
    ("a*", "ab/c", False), ("a*/b", "abc/b", True), ("a*/b", "a/c/b", False),
    ("a*b*c*d*e*/f", "axbxcxdxe/f", True), ("a*b*c*d*e*/f", "axbxcxdxexxx/f", True),
    ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", False), ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", False),
    ("a*b?c*x", "abxbbxdbxebxczzx", True), ("a*b?c*x", "abxbbxdbxebxczzy", False),
    ("ab[c]", "abc", True), ("ab[b-d]", "abc", True), ("ab[e-g]", "abc", False), ("ab[^c]", "abc", False),
    ("ab[^b-d]", "abc", False), ("ab[^e-g]", "abc", True), ("a\\*b", "a*b", True), ("a\\*b", "ab", False),
    ("a?b", "a☺b", True), ("a[^a]b", "a☺b", True), ("a???b", "a☺b", False), ("a[^a][^a][^a]b", "a☺b", False),
    ("[a-ζ]*", "α", True), ("*[a-ζ]", "A", False), ("a?b", "a/b", False), ("a*b", "a/b", False),
    ("[\\]a]", "]", True), ("[\\-]", "-", True), ("[x\\-]", "x", True), ("[x\\-]", "-", True),
    ("[x\\-]", "z", False), ("[\\-x]", "x", True), ("[\\-x]", "-", True), ("[\\-x]", "a", False),
    ("*x", "xxx", True), ("a*b*c", "abc", True), ("", "", True), ("", "a", False), ("*", "", True),
])
def test_go_path_match(pattern: str, name: str, hit: bool) -> None:
    assert pathmatch.match(pattern, name) is hit


@pytest.mark.parametrize("pattern", [
    "[]a]", "[-]", "[x-]", "[-x]", "\\", "[a-b-c]", "[", "[^", "[^bc", "a[", "*[", "a*[", "[a-", "*x\\",
])
def test_bad_patterns_raise(pattern: str) -> None:
    with pytest.raises(pathmatch.BadPattern):
        pathmatch.match(pattern, "a")


def test_bad_pattern_after_a_mismatch_still_raises() -> None:
    with pytest.raises(pathmatch.BadPattern):
        pathmatch.match("a*b[", "zzz")


def test_reference_filter_refuses_a_bad_pattern() -> None:
    with pytest.raises(errors.InvalidArgument, match="syntax error in pattern"):
        images_json._checked("busy[box")


def test_no_polynomial_backtracking() -> None:
    """A regex built from this glob took seconds (each * retried against every other); Go's chunked
    matching takes milliseconds.  The bound is loose (a loaded machine), the blow-up it guards is not."""
    name = "a" * 4000
    started = time.monotonic()
    assert not pathmatch.match("*a" * 20 + "*b", name)
    assert pathmatch.match("*a" * 20 + "*", name)
    assert time.monotonic() - started < 2.0

