""".dockerignore as moby's patternmatcher reads and applies it.

Lines are trimmed; empty lines and lines starting with ``#`` are skipped; ``!`` makes an exception (trimmed
again after the ``!``).  Patterns are cleaned paths relative to the context root: ``*`` and ``?`` never cross a
``/``, ``**`` crosses any number of directories, ``[...]`` is a class and ``\\`` escapes.  A pattern also matches
everything under a directory it matches (its first components).  The last pattern that matches decides.
"""
from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Pattern:
    text: str
    exclusion: bool
    regex: re.Pattern[str]
    depth: int  # number of path components


def read_patterns(text: str) -> list[str]:
    out: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exclusion = line.startswith("!")
        if exclusion:
            line = line[1:].strip()
        if not line:
            continue
        line = posixpath.normpath(line)
        if len(line) > 1 and line.startswith("/"):
            line = line.lstrip("/") or "/"
        out.append(("!" if exclusion else "") + line)
    return out


def _compile(pattern: str) -> re.Pattern[str]:
    out = ["^"]
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            if pattern[i + 1:i + 2] == "*":
                i += 1
                if pattern[i + 1:i + 2] == "/":  # "**/": zero or more directories
                    i += 1
                    out.append("(.*/)?")
                else:
                    out.append(".*")
            else:
                out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                out.append(re.escape(ch))
            else:
                body = pattern[i + 1:end]
                if body.startswith("!") or body.startswith("^"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = end
        elif ch == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(ch))
        i += 1
    out.append("$")
    return re.compile("".join(out), re.DOTALL)


class Matcher:
    def __init__(self, patterns: list[str]) -> None:
        self.patterns: list[Pattern] = []
        for raw in patterns:
            exclusion = raw.startswith("!")
            text = raw[1:] if exclusion else raw
            self.patterns.append(Pattern(text, exclusion, _compile(text), len(text.split("/"))))

    @property
    def has_exclusions(self) -> bool:
        return any(p.exclusion for p in self.patterns)

    def matches(self, path: str) -> bool:
        """Whether ``path`` (relative, "/"-separated) is ignored."""
        path = posixpath.normpath(path)
        parts = path.split("/")
        matched = False
        for pattern in self.patterns:
            if pattern.exclusion != matched:
                continue
            hit = bool(pattern.regex.match(path))
            if not hit and len(parts) > 1 and pattern.depth < len(parts):
                hit = bool(pattern.regex.match("/".join(parts[:pattern.depth])))
            if hit:
                matched = not pattern.exclusion
        return matched
