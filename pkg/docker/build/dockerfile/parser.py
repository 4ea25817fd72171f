"""Dockerfile text to nodes, as BuildKit's frontend/dockerfile/parser does it.

Parser directives (``# escape=``, ``# syntax=``) count only before the first comment, blank line or
instruction.  A line ending in the escape token continues on the next; comment lines and empty lines inside a
continuation are dropped.  Each logical line is split into the instruction word (case-insensitive), leading
``--flags`` and its arguments, in the form that instruction takes: a JSON array or the shell form
(RUN, CMD, ENTRYPOINT), words (COPY, ADD, VOLUME, EXPOSE, FROM), ``key=value`` pairs (ENV, LABEL, ARG),
one string (USER, WORKDIR, STOPSIGNAL, MAINTAINER), a sub-instruction (ONBUILD) or HEALTHCHECK's forms.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from pkg import errors

_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
_HEREDOC = re.compile(r"<<(-?)\s*(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\2")
HEREDOC_COMMANDS = ("run", "copy", "add")


class ParseError(errors.InvalidArgument):
    """A Dockerfile error at a line: BuildKit's "dockerfile parse error on line N: ..." wording."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"dockerfile parse error on line {line}: {message}")
        self.line = line
        self.detail = message


@dataclass(frozen=True)
class Heredoc:
    name: str
    content: str
    expand: bool  # unquoted delimiter: variables are expanded
    chomp: bool  # <<- : leading tabs removed


@dataclass(frozen=True)
class Node:
    """One instruction as written: ``cmd`` lower-case, ``args`` in the instruction's form."""

    cmd: str
    original: str
    line: int
    end_line: int
    args: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    json: bool = False
    pairs: tuple[tuple[str, str | None], ...] = ()  # ENV, LABEL (values as written), ARG (None: no default)
    sub: Node | None = None  # ONBUILD's instruction
    heredocs: tuple[Heredoc, ...] = ()


@dataclass(frozen=True)
class Dockerfile:
    nodes: list[Node]
    escape: str = "\\"
    directives: dict[str, str] = field(default_factory=dict)


def parse(text: str) -> Dockerfile:
    lines = text.replace("\r\n", "\n").split("\n")
    escape = "\\"
    directives: dict[str, str] = {}
    i = 0
    while i < len(lines):  # directives: only at the very top
        m = _DIRECTIVE.match(lines[i].strip()) if lines[i].strip().startswith("#") else None
        if m is None or m.group(1).lower() in directives:
            break
        key, value = m.group(1).lower(), m.group(2)
        directives[key] = value
        if key == "escape":
            if value not in ("\\", "`"):
                raise ParseError(i + 1, f"invalid escape token '{value}' does not match ` or \\")
            escape = value
        i += 1
    continuation = re.compile(re.escape(escape) + r"[ \t]*$")
    nodes: list[Node] = []
    while i < len(lines):
        raw = lines[i]
        start = i + 1
        i += 1
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        logical = raw.lstrip()
        while continuation.search(logical) and i <= len(lines):
            logical = continuation.sub("", logical)
            while i < len(lines) and (not lines[i].strip() or lines[i].strip().startswith("#")):
                i += 1  # empty and comment lines inside a continuation are skipped
            if i >= len(lines):
                break
            logical += lines[i]
            i += 1
        node, i = _node(logical.strip(), start, i, lines, escape)
        nodes.append(node)
    if not nodes:
        raise errors.InvalidArgument("file with no instructions")
    return Dockerfile(nodes, escape, directives)


def _node(line: str, start: int, pos: int, lines: list[str], escape: str) -> tuple[Node, int]:
    parts = re.split(r"\s+", line, maxsplit=1)
    word, rest = parts[0], parts[1] if len(parts) > 1 else ""
    cmd = word.lower()
    heredocs: list[Heredoc] = []
    if cmd in HEREDOC_COMMANDS:
        for m in _HEREDOC.finditer(rest):
            body, pos = _heredoc_body(m.group(3), pos, lines, start)
            chomp = m.group(1) == "-"
            if chomp:
                body = "".join(ln.lstrip("\t") for ln in body.splitlines(keepends=True))
            heredocs.append(Heredoc(m.group(3), body, expand=not m.group(2), chomp=chomp))
    flags, rest = _flags(rest, start)
    end = pos if heredocs else start
    try:
        node = _dispatch(cmd, word, line, rest, flags, start, escape)
    except errors.InvalidArgument as exc:
        if isinstance(exc, ParseError):
            raise
        raise ParseError(start, exc.message) from None
    if heredocs:
        node = Node(node.cmd, node.original, node.line, end, node.args, node.flags, node.json, node.pairs, node.sub,
                    tuple(heredocs))
    return node, pos


def _heredoc_body(name: str, pos: int, lines: list[str], start: int) -> tuple[str, int]:
    body: list[str] = []
    while pos < len(lines):
        text = lines[pos]
        pos += 1
        if text.lstrip("\t") == name:
            return "".join(f"{b}\n" for b in body), pos
        body.append(text)
    raise ParseError(start, f"unterminated heredoc {name}")


def _flags(rest: str, line: int) -> tuple[tuple[str, ...], str]:
    """Leading ``--name[=value]`` words (BuildKit's extractBuilderFlags); ``--`` alone ends them."""
    flags: list[str] = []
    text = rest
    while text.startswith("--"):
        m = re.match(r"(\S+)\s*", text)
        assert m is not None
        token = m.group(1)
        if token == "--":
            text = text[m.end():]
            break
        flags.append(token[2:])
        text = text[m.end():]
    return tuple(flags), text


def _dispatch(cmd: str, word: str, line: str, rest: str, flags: tuple[str, ...], start: int, escape: str) -> Node:
    def node(**kw: object) -> Node:
        return Node(cmd=cmd, original=line, line=start, end_line=start, flags=flags, **kw)  # type: ignore[arg-type]

    if cmd in ("run", "cmd", "entrypoint"):
        parsed = _maybe_json(rest)
        if parsed is not None:
            return node(args=tuple(parsed), json=True)
        return node(args=(rest,) if rest.strip() else ())
    if cmd == "shell":
        parsed = _maybe_json(rest)
        if parsed is None:
            raise errors.InvalidArgument("SHELL requires the arguments to be in JSON form")
        return node(args=tuple(parsed), json=True)
    if cmd in ("copy", "add", "volume"):
        parsed = _maybe_json(rest)
        if parsed is not None:
            return node(args=tuple(parsed), json=True)
        return node(args=tuple(rest.split()))
    if cmd in ("from", "expose"):
        return node(args=tuple(rest.split()))
    if cmd in ("user", "workdir", "stopsignal", "maintainer"):
        return node(args=(rest.strip(),) if rest.strip() else ())
    if cmd in ("env", "label"):
        return node(pairs=tuple(_name_vals(cmd, rest, escape)))
    if cmd == "arg":
        return node(pairs=tuple(_name_or_vals(rest, escape)))
    if cmd == "onbuild":
        sub_parts = re.split(r"\s+", rest.strip(), maxsplit=1)
        sub_cmd = sub_parts[0].lower()
        if not sub_cmd:
            raise errors.InvalidArgument("ONBUILD requires at least one argument")
        if sub_cmd == "onbuild":
            raise errors.InvalidArgument("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
        if sub_cmd in ("from", "maintainer"):
            raise errors.InvalidArgument(f"{sub_cmd.upper()} isn't allowed as an ONBUILD trigger")
        sub_flags, sub_rest = _flags(sub_parts[1] if len(sub_parts) > 1 else "", start)
        sub = _dispatch(sub_cmd, sub_parts[0], rest.strip(), sub_rest, sub_flags, start, escape)
        return node(args=(rest.strip(),), sub=sub)
    if cmd == "healthcheck":
        kind_parts = re.split(r"\s+", rest.strip(), maxsplit=1)
        kind = kind_parts[0].upper()
        tail = kind_parts[1] if len(kind_parts) > 1 else ""
        if kind == "NONE":
            if tail.strip():
                raise errors.InvalidArgument("HEALTHCHECK NONE takes no arguments")
            return node(args=("NONE",))
        if kind != "CMD":
            raise errors.InvalidArgument(f'Unknown type "{kind}" in HEALTHCHECK (try CMD)')
        parsed = _maybe_json(tail)
        if parsed is not None:
            return node(args=("CMD", *parsed), json=True)
        return node(args=("CMD-SHELL", tail) if tail.strip() else ("CMD-SHELL",))
    raise errors.InvalidArgument(f"unknown instruction: {word.upper()}")


def _maybe_json(rest: str) -> list[str] | None:
    text = rest.strip()
    if not text.startswith("["):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


def split_words(rest: str, escape: str) -> list[str]:
    """BuildKit's parseWords: whitespace outside quotes splits; quotes and escapes are kept for the lexer."""
    words: list[str] = []
    word = ""
    quote = ""
    i = 0
    while i < len(rest):
        ch = rest[i]
        if ch == escape and quote != "'" and i + 1 < len(rest):
            word += ch + rest[i + 1]
            i += 2
            continue
        if quote:
            if ch == quote:
                quote = ""
            word += ch
        elif ch in ("'", '"'):
            quote = ch
            word += ch
        elif ch.isspace():
            if word:
                words.append(word)
            word = ""
        else:
            word += ch
        i += 1
    if word:
        words.append(word)
    return words


def _name_vals(cmd: str, rest: str, escape: str) -> list[tuple[str, str | None]]:
    words = split_words(rest, escape)
    name = cmd.upper()
    if not words:
        raise errors.InvalidArgument(f"{name} requires at least one argument")
    if "=" not in words[0]:  # the legacy "ENV key value" form: one pair, the rest of the line as value
        parts = re.split(r"\s+", rest.strip(), maxsplit=1)
        if len(parts) < 2:
            raise errors.InvalidArgument(f"{name} must have two arguments")
        return [(parts[0], parts[1])]
    out: list[tuple[str, str | None]] = []
    for word in words:
        if "=" not in word:
            raise errors.InvalidArgument(f"Syntax error - can't find = in {word!r}. Must be of the form: name=value")
        key, _, value = word.partition("=")
        if not key:
            raise errors.InvalidArgument(f"{name} names can not be blank")
        out.append((key, value))
    return out


def _name_or_vals(rest: str, escape: str) -> list[tuple[str, str | None]]:
    words = split_words(rest, escape)
    if not words:
        raise errors.InvalidArgument("ARG requires at least one argument")
    out: list[tuple[str, str | None]] = []
    for word in words:
        key, eq, value = word.partition("=")
        if not key:
            raise errors.InvalidArgument("ARG names can not be blank")
        out.append((key, value if eq else None))
    return out
