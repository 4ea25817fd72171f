"""One stage's instructions, as moby's classic builder gives them meaning: each changes the stage's runtime
config (ENV, LABEL, ARG, USER, WORKDIR, EXPOSE, VOLUME, CMD, ENTRYPOINT, SHELL, STOPSIGNAL, HEALTHCHECK,
ONBUILD, MAINTAINER) and/or its filesystem (RUN, COPY, ADD, WORKDIR), and ends as a new image (a cache hit
reuses the image an identical step made before).

Values are expanded with BuildKit's lexer: ENV over the build args in scope.  ARGs come from the build's
``buildargs`` (which win), their default, or the global ARG of the same name.
"""
from __future__ import annotations

import copy
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pkg import errors
from pkg.docker.build.cache import step_key
from pkg.docker.build.context import tree_checksum
from pkg.docker.build.copy import CopySpec, Source, Writer, build_tar, is_dir, make_parents, resolve_sources
from pkg.docker.build.dockerfile.instructions import Instruction
from pkg.docker.build.dockerfile.lexer import process_word, process_words
from pkg.docker.build.exporter import Layer
from pkg.docker.build.model import PREDEFINED_ARGS
from pkg.docker.build.remote import download
from pkg.images.model import Image

DEFAULT_SHELL = ["/bin/sh", "-c"]
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000,
          "h": 3_600_000_000_000}


def parse_duration(value: str, flag: str) -> int:
    """Go's time.ParseDuration, in nanoseconds (HEALTHCHECK's flags)."""
    if value in ("0", ""):
        return 0
    pos, total = 0, 0.0
    for m in _DURATION.finditer(value):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(value) or not pos:
        raise errors.InvalidArgument(f'time: invalid duration "{value}"')
    return int(total)


@dataclass
class StageState:
    image: Image | None
    config: dict[str, Any]
    args: dict[str, str | None] = field(default_factory=dict)  # ARGs in scope
    cmd_set: bool = False

    @property
    def env_list(self) -> list[str]:
        return list(self.config.get("Env") or [])

    def env(self) -> dict[str, str]:
        out = {k: v for k, v in self.args.items() if v is not None}
        for entry in self.env_list:
            key, _, value = entry.partition("=")
            out[key] = value
        return out

    def set_env(self, key: str, value: str) -> None:
        env = [e for e in self.env_list if e.partition("=")[0] != key]
        env.append(f"{key}={value}")
        self.config["Env"] = env

    @property
    def shell(self) -> list[str]:
        return list(self.config.get("Shell") or DEFAULT_SHELL)


class SourceTree(Protocol):
    """Where COPY/ADD read: the context, or another stage's or image's filesystem (mounted)."""

    path: Path

    def checksum(self, path: Path) -> str: ...


# Blocking: (the step's mounted root filesystem, where to write the tar) -> that tar, or None: nothing to do.
Planner = Callable[[Path, Path], Path | None]


class Steps(Protocol):
    """What the dispatcher needs from the builder: cache, exporter, RUN and filesystem steps, sources."""

    async def out(self, text: str) -> None: ...

    async def cached(self, key: str) -> Image | None: ...

    async def commit(self, key: str, state: StageState, created_by: str, layer: Layer | None) -> Image: ...

    async def run(self, state: StageState, argv: list[str], env: list[str]) -> Layer: ...

    async def fs(self, state: StageState, planner: Planner) -> Layer | None: ...

    async def source_root(self, ref: str) -> tuple[SourceTree, bool]: ...

    def tmpdir(self) -> Path: ...

    def use_arg(self, name: str) -> None: ...

    @property
    def build_args(self) -> dict[str, str | None]: ...

    @property
    def meta_args(self) -> dict[str, str | None]: ...

    @property
    def escape(self) -> str: ...


async def dispatch(steps: Steps, state: StageState, inst: Instruction) -> None:
    kind = inst.kind
    node = inst.node
    env = state.env()
    esc = steps.escape
    if kind == "run":
        await _run(steps, state, inst)
        return
    if kind in ("copy", "add"):
        await _copy(steps, state, inst)
        return
    if kind == "workdir":
        await _workdir(steps, state, inst)
        return
    text = node.original
    if kind == "env":
        pairs = [(process_word(k, env, esc), process_word(v or "", env, esc)) for k, v in node.pairs]
        for key, value in pairs:
            state.set_env(key, value)
        text = "ENV " + " ".join(f"{k}={v}" for k, v in pairs)
    elif kind == "label":
        labels = dict(state.config.get("Labels") or {})
        pairs = [(process_word(k, env, esc), process_word(v or "", env, esc)) for k, v in node.pairs]
        labels.update(pairs)
        state.config["Labels"] = labels
        text = "LABEL " + " ".join(f"{k}={v}" for k, v in pairs)
    elif kind == "arg":
        shown = []
        for key, default in node.pairs:
            steps.use_arg(key)
            arg_value: str | None
            if key in steps.build_args and steps.build_args[key] is not None:
                arg_value = steps.build_args[key]
            elif default is not None:
                arg_value = process_word(default, env, esc)
            else:
                arg_value = steps.meta_args.get(key)
            state.args[key] = arg_value
            shown.append(key if default is None else f"{key}={default}")
        text = "ARG " + " ".join(shown)
    elif kind == "user":
        state.config["User"] = process_word(node.args[0], env, esc)
    elif kind == "stopsignal":
        state.config["StopSignal"] = process_word(node.args[0], env, esc)
    elif kind == "expose":
        ports = dict(state.config.get("ExposedPorts") or {})
        for word in process_words(" ".join(node.args), env, esc):
            ports[word if "/" in word else f"{word}/tcp"] = {}
        state.config["ExposedPorts"] = ports
    elif kind == "volume":
        volumes = dict(state.config.get("Volumes") or {})
        words = [process_word(a, env, esc) for a in node.args] if node.json else \
            process_words(" ".join(node.args), env, esc)
        for word in words:
            if not word.strip():
                raise errors.InvalidArgument("VOLUME specified can not be an empty string")
            volumes[word] = {}
        state.config["Volumes"] = volumes
    elif kind in ("cmd", "entrypoint"):
        argv = list(node.args) if node.json else [*state.shell, *node.args]
        if kind == "cmd":
            state.config["Cmd"] = argv
            state.cmd_set = True
        else:
            state.config["Entrypoint"] = argv
            if not state.cmd_set:
                state.config["Cmd"] = None
    elif kind == "shell":
        state.config["Shell"] = list(node.args)
    elif kind == "healthcheck":
        state.config["Healthcheck"] = _healthcheck(inst)
    elif kind == "onbuild":
        state.config["OnBuild"] = [*(state.config.get("OnBuild") or []), node.args[0]]
    elif kind == "maintainer":
        pass  # the image's author: kept in the history text only
    else:
        raise errors.InvalidArgument(f"unknown instruction: {kind.upper()}")
    created_by = f"/bin/sh -c #(nop)  {text}"
    await _commit_config(steps, state, created_by)


async def _commit_config(steps: Steps, state: StageState, created_by: str, layer: Layer | None = None,
                         extra: Any = None) -> None:
    parent = state.image.id if state.image is not None else ""
    key = step_key(parent, created_by, state.config, extra)
    hit = await steps.cached(key)
    if hit is not None:
        await steps.out(" ---> Using cache\n")
        state.image = hit
        return
    state.image = await steps.commit(key, state, created_by, layer)


def _healthcheck(inst: Instruction) -> dict[str, Any]:
    args = list(inst.node.args)
    if args == ["NONE"]:
        return {"Test": ["NONE"]}
    check: dict[str, Any] = {"Test": args}
    for flag, key in (("interval", "Interval"), ("timeout", "Timeout"), ("start-period", "StartPeriod"),
                      ("start-interval", "StartInterval")):
        if flag in inst.flags:
            value = parse_duration(inst.flags[flag], flag)
            if 0 < value < 1_000_000:
                raise errors.InvalidArgument(f"Interval \"{flag}\" cannot be less than 1ms")
            if value:
                check[key] = value
    if "retries" in inst.flags:
        try:
            retries = int(inst.flags["retries"])
        except ValueError:
            raise errors.InvalidArgument(f"invalid --retries value: {inst.flags['retries']}") from None
        if retries < 0:
            raise errors.InvalidArgument("--retries cannot be negative")
        if retries:
            check["Retries"] = retries
    return check


def run_env(steps: Steps, state: StageState) -> tuple[list[str], list[str]]:
    """(the container's env, the build args in it): the config's Env plus the ARGs in scope it does not set, plus
    the predefined proxy args given."""
    env = state.env_list
    keys = {e.partition("=")[0] for e in env}
    args = [f"{k}={v}" for k, v in sorted(state.args.items()) if v is not None and k not in keys]
    for name in sorted(PREDEFINED_ARGS):
        value = steps.build_args.get(name)
        if value is not None and name not in state.args and name not in keys:
            args.append(f"{name}={value}")
    return [*env, *args], args


async def _run(steps: Steps, state: StageState, inst: Instruction) -> None:
    node = inst.node
    if node.json:
        argv = list(node.args)
    elif node.heredocs and node.args and re.fullmatch(r"\s*<<-?\s*['\"]?\w+['\"]?\s*", node.args[0]):
        argv = [*state.shell, node.heredocs[0].content]
    else:
        argv = [*state.shell, *node.args]
    if state.image is None:
        raise errors.InvalidArgument("Please provide a source image with `from` prior to run")
    env, args = run_env(steps, state)
    # As moby: the predefined proxy args reach the command but neither its history nor its cache key.
    args = [a for a in args if a.partition("=")[0] not in PREDEFINED_ARGS or a.partition("=")[0] in state.args]
    created_by = " ".join(argv) if not args else f"|{len(args)} {' '.join(args)} {' '.join(argv)}"
    key = step_key(state.image.id, "RUN", argv, args, state.config)
    hit = await steps.cached(key)
    if hit is not None:
        await steps.out(" ---> Using cache\n")
        state.image = hit
        return
    layer = await steps.run(state, argv, env)
    state.image = await steps.commit(key, state, created_by, layer)


async def _workdir(steps: Steps, state: StageState, inst: Instruction) -> None:
    env = state.env()
    path = process_word(inst.node.args[0], env, steps.escape)
    if not path.startswith("/"):
        path = posixpath.join(str(state.config.get("WorkingDir") or "/"), path)
    path = posixpath.normpath(path)
    state.config["WorkingDir"] = path
    created_by = f"/bin/sh -c #(nop) WORKDIR {path}"
    parent = state.image.id if state.image is not None else ""
    key = step_key(parent, created_by, state.config)
    hit = await steps.cached(key)
    if hit is not None:
        await steps.out(" ---> Using cache\n")
        state.image = hit
        return
    layer = await steps.fs(state, lambda rootfs, out: _mkdir(rootfs, out, path))
    state.image = await steps.commit(key, state, created_by, layer)


_HEREDOC_SOURCE = re.compile(r"^<<-?(['\"]?)(\w+)\1$")


async def _copy(steps: Steps, state: StageState, inst: Instruction) -> None:
    node = inst.node
    what = inst.kind.upper()
    env = state.env()
    esc = steps.escape
    words = [process_word(a, env, esc) if not _HEREDOC_SOURCE.match(a) else a for a in node.args]
    srcs, dest = words[:-1], words[-1]
    chmod = None
    if "chmod" in inst.flags:
        try:
            chmod = int(inst.flags["chmod"], 8)
        except ValueError:
            raise errors.InvalidArgument(f"invalid chmod parameter: {inst.flags['chmod']}") from None
        if not 0 <= chmod <= 0o7777:
            raise errors.InvalidArgument(f"invalid chmod parameter: {inst.flags['chmod']}")
    chown = process_word(inst.flags.get("chown", ""), env, esc)
    src_ref = process_word(inst.flags.get("from", ""), env, esc)
    extra: list[Source] = []  # heredocs and URLs: files written into the build's scratch space
    local: list[str] = []
    heredocs = {h.name: h for h in node.heredocs}
    for src in srcs:
        heredoc = _HEREDOC_SOURCE.match(src)
        if heredoc and heredoc.group(2) in heredocs:
            doc = heredocs[heredoc.group(2)]
            path = steps.tmpdir() / doc.name
            path.write_text(doc.content)  # written as is (no variable expansion in COPY heredocs here)
            extra.append(Source(path, doc.name, False))
        elif re.match(r"^https?://", src):
            if inst.kind != "add" or src_ref:
                raise errors.InvalidArgument(f"source can't be a URL for {what}")
            path = await download(src, steps.tmpdir())
            extra.append(Source(path, path.name, False))
        else:
            local.append(src)
    root, from_context = await steps.source_root(src_ref)
    found = resolve_sources(root.path, local, what)
    sums = [(s.name, root.checksum(s.path)) for s in found] + [(s.name, tree_checksum(s.path)) for s in extra]
    sources = [*found, *extra]
    spec = CopySpec(sources, dest, str(state.config.get("WorkingDir") or "/"), chown, chmod,
                    from_context or bool(extra), extract_archives=inst.kind == "add")
    sums_digest = step_key(sums)
    created_by = f"/bin/sh -c #(nop) {what} {'multi' if len(sums) > 1 else 'file'}:{sums_digest[7:71]} in {dest} "
    parent = state.image.id if state.image is not None else ""
    key = step_key(parent, what, sums, dest, chown, chmod, src_ref, state.config.get("WorkingDir"))
    hit = await steps.cached(key)
    if hit is not None:
        await steps.out(" ---> Using cache\n")
        state.image = hit
        return
    layer = await steps.fs(state, lambda rootfs, out: build_tar(spec, rootfs, out, what))
    state.image = await steps.commit(key, state, created_by, layer)


def _mkdir(rootfs: Path, out: Path, path: str) -> Path | None:
    """WORKDIR's directory, when the image does not have it yet (root-owned, 0755, as moby makes it)."""
    if is_dir(rootfs, path):
        return None
    writer = Writer(out, None, None, keep_owner=False, rootfs=rootfs)
    try:
        make_parents(writer, rootfs, path)
    finally:
        writer.close()
    return out


def initial_config(doc: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(doc.get("config") or {})
