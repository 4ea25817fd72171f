"""Nodes to stages: each instruction checked as BuildKit's instructions.Parse checks it (flags, argument counts,
stage names), with its "dockerfile parse error on line N" wording.  Values are not expanded here: that needs the
build args and the environment of the stage at that step (the builder does it)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from pkg import errors
from pkg.docker.build.dockerfile.parser import Dockerfile, Node, ParseError

FLAGS: dict[str, frozenset[str]] = {
    "from": frozenset({"platform"}),
    "copy": frozenset({"from", "chown", "chmod", "link", "parents", "exclude"}),
    "add": frozenset({"chown", "chmod", "link", "checksum", "keep-git-dir", "exclude"}),
    "healthcheck": frozenset({"interval", "timeout", "start-period", "start-interval", "retries"}),
    "run": frozenset({"mount", "network", "security"}),
}
EXACTLY_ONE = ("user", "workdir", "stopsignal", "maintainer")
AT_LEAST_ONE = ("run", "expose", "volume", "shell")
STAGE_NAME = re.compile(r"^[a-z][a-z0-9-_.]*$")


@dataclass(frozen=True)
class Instruction:
    node: Node
    flags: dict[str, str] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.node.cmd

    @property
    def text(self) -> str:
        """What "Step N/M : ..." shows: the instruction as written (continuations joined)."""
        return self.node.original


@dataclass
class Stage:
    index: int
    base: str  # as written (expanded with the global ARGs when the stage starts)
    name: str  # "" when unnamed (AS <name>, lower-cased)
    platform: str
    node: Node
    instructions: list[Instruction] = field(default_factory=list)


@dataclass(frozen=True)
class Parsed:
    stages: list[Stage]
    meta_args: list[Instruction]  # ARGs before the first FROM
    escape: str


def _flags(node: Node) -> dict[str, str]:
    allowed = FLAGS.get(node.cmd, frozenset())
    out: dict[str, str] = {}
    for flag in node.flags:
        name, eq, value = flag.partition("=")
        if name not in allowed:
            raise ParseError(node.line, f"unknown flag: {name}")
        if name in ("link", "keep-git-dir", "parents") and not eq:
            value = "true"
        elif not eq:
            raise ParseError(node.line, f"missing a value on flag: {name}")
        out[name] = value
    return out


def _check(node: Node) -> None:
    name = node.cmd.upper()
    if node.cmd in EXACTLY_ONE and len(node.args) != 1:
        raise ParseError(node.line, f"{name} requires exactly one argument")
    if node.cmd in AT_LEAST_ONE and not node.args and not node.heredocs:
        raise ParseError(node.line, f"{name} requires at least one argument")
    if node.cmd in ("copy", "add") and len(node.args) < 2 and not node.heredocs:
        if len(node.args) == 1:
            raise ParseError(node.line, f"{name} requires at least two arguments, but only one was provided. "
                                        "Destination could not be determined.")
        raise ParseError(node.line, f"{name} requires at least two arguments")
    if node.cmd == "from" and len(node.args) not in (1, 3):
        raise ParseError(node.line, "FROM requires either one or three arguments")
    if node.cmd == "from" and len(node.args) == 3 and node.args[1].lower() != "as":
        raise ParseError(node.line, "Second argument should be AS")
    if node.cmd == "healthcheck" and node.args == ("CMD-SHELL",):
        raise ParseError(node.line, "Missing command after HEALTHCHECK CMD")


def instruction(node: Node) -> Instruction:
    _check(node)
    flags = _flags(node)
    if node.cmd == "run" and flags:
        raise ParseError(node.line, f"the --{next(iter(flags))} option requires BuildKit. Refer to "
                                    "https://docs.docker.com/go/buildkit/ to learn how to build images with "
                                    "BuildKit enabled")
    if node.sub is not None:
        instruction(node.sub)
    return Instruction(node, flags)


def parse_stages(dockerfile: Dockerfile) -> Parsed:
    stages: list[Stage] = []
    meta: list[Instruction] = []
    names: set[str] = set()
    for node in dockerfile.nodes:
        inst = instruction(node)
        if node.cmd == "from":
            name = node.args[2].lower() if len(node.args) == 3 else ""
            if name:
                if not STAGE_NAME.match(name):
                    raise ParseError(node.line, f"invalid name for build stage: {node.args[2]!r}, name can't start "
                                                "with a number or contain symbols")
                if name in names:
                    raise ParseError(node.line, f"duplicate name {name}")
                names.add(name)
            stages.append(Stage(len(stages), node.args[0], name, inst.flags.get("platform", ""), node))
        elif not stages:
            if node.cmd != "arg":
                raise ParseError(node.line, "no build stage in current context")
            meta.append(inst)
        else:
            stages[-1].instructions.append(inst)
    if not stages:
        raise errors.InvalidArgument("no build stage in current context")
    return Parsed(stages, meta, dockerfile.escape)


def find_stage(stages: list[Stage], ref: str) -> Stage | None:
    """A stage by name (case-insensitive) or index, as COPY --from and --target name them."""
    lowered = ref.lower()
    for stage in stages:
        if stage.name and stage.name == lowered:
            return stage
    if ref.isdigit() and int(ref) < len(stages):
        return stages[int(ref)]
    return None
