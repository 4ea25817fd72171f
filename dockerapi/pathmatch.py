"""Go's ``path.Match`` (what moby's reference filter uses), without a regular expression.

A glob turned into a Python ``re`` backtracks polynomially on patterns like ``*a*a*a*a*b`` (each ``*``
retried at every position of every other), on the shared event loop.  Go's algorithm never retries an
earlier ``*``: the pattern is split into chunks at the stars and each chunk is matched at the first place
it fits (the last one only at the end), so a match costs O(len(pattern) * len(name)).

Syntax as Go's: ``*`` (any run of non-``/``), ``?`` (one non-``/``), ``[...]`` / ``[^...]`` classes with
``lo-hi`` ranges, ``\\c`` for a literal ``c``.  A malformed pattern raises :class:`BadPattern`.
"""
from __future__ import annotations


class BadPattern(ValueError):
    """Go's path.ErrBadPattern: "syntax error in pattern"."""

    def __init__(self) -> None:
        super().__init__("syntax error in pattern")


def match(pattern: str, name: str) -> bool:
    """Whether all of ``name`` matches the glob ``pattern``."""
    while pattern:
        star, chunk, pattern = _scan_chunk(pattern)
        if star and not chunk:
            return "/" not in name  # a trailing * takes the rest, within one path element
        rest = _match_chunk(chunk, name)
        # The chunk fits here; the last chunk must also reach the end of the name.
        if rest is not None and (not rest or pattern):
            name = rest
            continue
        if star:
            found = False
            for i, c in enumerate(name):  # let the * take name[:i+1], never a "/"
                if c == "/":
                    break
                rest = _match_chunk(chunk, name[i + 1:])
                if rest is not None and (not rest or pattern):
                    name, found = rest, True
                    break
            if found:
                continue
        while pattern:  # no match: still report a malformed remainder, as Go does
            _, chunk, pattern = _scan_chunk(pattern)
            _match_chunk(chunk, "")
        return False
    return not name


def _scan_chunk(pattern: str) -> tuple[bool, str, str]:
    """(leading stars?, the chunk up to the next star outside a class, the rest)."""
    star = False
    while pattern.startswith("*"):
        pattern, star = pattern[1:], True
    in_class = False
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            i += 1  # the escaped character is literal, whatever it is
        elif c == "[":
            in_class = True
        elif c == "]":
            in_class = False
        elif c == "*" and not in_class:
            break
        i += 1
    return star, pattern[:i], pattern[i:]


def _match_chunk(chunk: str, s: str) -> str | None:
    """What remains of ``s`` once ``chunk`` (no stars) matched its start; None when it does not.  The whole
    chunk is parsed even after a mismatch, so a bad pattern raises whatever the name."""
    failed = False
    while chunk:
        if not failed and not s:
            failed = True
        c = chunk[0]
        if c == "[":
            r = "" if failed else s[0]
            s = s[1:]
            chunk = chunk[1:]
            negated = chunk.startswith("^")
            if negated:
                chunk = chunk[1:]
            matched, ranges = False, 0
            while True:
                if chunk.startswith("]") and ranges > 0:
                    chunk = chunk[1:]
                    break
                lo, chunk = _class_char(chunk)
                hi = lo
                if chunk.startswith("-"):
                    hi, chunk = _class_char(chunk[1:])
                if lo <= r <= hi:
                    matched = True
                ranges += 1
            if matched == negated:
                failed = True
        elif c == "?":
            if not failed:
                if s[0] == "/":
                    failed = True
                s = s[1:]
            chunk = chunk[1:]
        else:
            if c == "\\":
                chunk = chunk[1:]
                if not chunk:
                    raise BadPattern()
            if not failed:
                if chunk[0] != s[0]:
                    failed = True
                s = s[1:]
            chunk = chunk[1:]
    return None if failed else s


def _class_char(chunk: str) -> tuple[str, str]:
    """One (possibly escaped) character of a class, and the rest; the class must go on after it."""
    if not chunk or chunk[0] in "-]":
        raise BadPattern()
    if chunk[0] == "\\":
        chunk = chunk[1:]
        if not chunk:
            raise BadPattern()
    r, chunk = chunk[0], chunk[1:]
    if not chunk:
        raise BadPattern()
    return r, chunk
