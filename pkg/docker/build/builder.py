"""A build: the context received and extracted, the Dockerfile parsed, the target's stages run as a graph
(independent stages in parallel), every step cached by content, and the final image named through the image
service, reported in the classic builder's stream (``Step N/M``, `` ---> <id>``, ``Successfully built``).

Errors raised before the first message (a bad context, a Dockerfile parse error, an unknown target) reach the
caller as they are (the HTTP front end answers with a status); later ones are ``BuildFailed`` or any
``NarwhalError``, which the stream reports as ``errorDetail``.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pkg import errors
from pkg import metrics as metrics_mod
from pkg.containerd.client import Client
from pkg.containerd.leases import lease
from pkg.docker.build import context as build_context
from pkg.docker.build.cache import BuildCache, Entry
from pkg.docker.build.dispatch import StageState, dispatch, initial_config
from pkg.docker.build.dockerfile.instructions import Instruction, Parsed, Stage, find_stage, instruction, parse_stages
from pkg.docker.build.dockerfile.lexer import process_word
from pkg.docker.build.dockerfile.parser import parse
from pkg.docker.build.exporter import Exporter, Holds
from pkg.docker.build.graph import Sequencer, needed
from pkg.docker.build.model import PREDEFINED_ARGS, BuildFailed, BuildOptions, Emit
from pkg.docker.build.steps import StageSteps
from pkg.docker.engine.engine import Engine
from pkg.events import EventBus
from pkg.images import reference
from pkg.images.archive_export import write_stream
from pkg.images.model import Image, RegistryAuth
from pkg.images.service import ImageService
from pkg.mount import mounts_under

log = logging.getLogger(__name__)


def short(image_id: str) -> str:
    return image_id.removeprefix("sha256:")[:12]


class Builder:
    def __init__(self, client: Client, images: ImageService, engine: Engine, events: EventBus | None,
                 root: Path) -> None:
        self.client = client
        self.images = images
        self.engine = engine
        self.events = events
        self.root = root
        self.exporter = Exporter(images, events)
        self.holds = Holds(images)
        self.cache = BuildCache(client, root)
        self._running: dict[str, asyncio.Task[Any]] = {}

    async def prune(self, *, prune_all: bool = False, until: float | None = None,
                    keep_storage: int = 0) -> tuple[list[str], int]:
        """docker builder prune: cache records (without ``all``, only those no named image is); returns the
        removed record IDs and the bytes of layers they accounted for."""
        named: set[str] = set()
        if not prune_all:
            named = {image.id for image in await self.images.list() if image.repo_tags}

        def keep(entry: Entry) -> bool:
            if entry.image_id in named:
                return True
            return until is not None and entry.used_ns / 1e9 > until

        removed, size = await self.cache.prune(keep=keep, keep_storage=keep_storage)
        return [e.image_id.removeprefix("sha256:") for e in removed], size

    async def usage(self) -> list[Entry]:
        """The cache records, for docker system df."""
        return await self.cache.entries()

    def cancel(self, build_id: str) -> bool:
        task = self._running.get(build_id)
        if task is None:
            return False
        task.cancel()
        return True

    async def build(self, chunks: AsyncIterator[bytes], options: BuildOptions, emit: Emit,
                    build_id: str = "") -> str:
        """Run the build; returns the image ID."""
        scratch = self.root / "tmp" / secrets.token_hex(8)
        await asyncio.to_thread(scratch.mkdir, parents=True, mode=0o700)
        task = asyncio.current_task()
        if build_id and task is not None:
            self._running[build_id] = task
        metrics = metrics_mod.current()
        started = time.monotonic()
        result = "success"
        try:
            archive = scratch / "context.tar"
            await write_stream(chunks, archive)
            ctx = await asyncio.to_thread(build_context.prepare, archive, scratch / "context", options.dockerfile)
            await asyncio.to_thread(archive.unlink)
            parsed = parse_stages(parse(ctx.dockerfile))
            run = BuildRun(self, options, parsed, ctx, scratch, emit)
            return await run.execute()
        except BaseException as exc:
            result = metrics_mod.error_kind(exc)
            raise
        finally:
            metrics.builds.labels(result).inc()
            metrics.build_latency.observe(time.monotonic() - started)
            if build_id:
                self._running.pop(build_id, None)
            await asyncio.to_thread(_remove_scratch, scratch)


def _remove_scratch(scratch: Path) -> None:
    if mounts_under(scratch):  # never delete through a mount left behind
        log.warning("build scratch %s still has mounts; left in place", scratch)
        return
    shutil.rmtree(scratch, ignore_errors=True)


@dataclass
class BuildRun:
    builder: Builder
    options: BuildOptions
    parsed: Parsed
    context: build_context.BuildContext
    scratch: Path
    emit: Emit
    used_args: set[str] = field(default_factory=set)
    meta: dict[str, str | None] = field(default_factory=dict)
    results: dict[int, asyncio.Future[Image | None]] = field(default_factory=dict)
    lease_id: str = ""
    cache_from: list[str] = field(default_factory=list)

    async def execute(self) -> str:
        options = self.options
        stages = self.parsed.stages
        escape = self.parsed.escape
        for inst in self.parsed.meta_args:
            for key, default in inst.node.pairs:
                self.used_args.add(key)
                given = options.build_args.get(key)
                env = {k: v for k, v in self.meta.items() if v is not None}
                self.meta[key] = given if given is not None else (
                    process_word(default, env, escape) if default is not None else None)
        meta_env = {k: v for k, v in self.meta.items() if v is not None}
        if options.target:
            target = find_stage(stages, options.target)
            if target is None:
                raise errors.InvalidArgument(f"target stage \"{options.target}\" could not be found")
        else:
            target = stages[-1]
        if options.labels:
            text = "LABEL " + " ".join(f'"{_quote(k)}"="{_quote(v)}"' for k, v in sorted(options.labels.items()))
            target.instructions.append(instruction(parse(text).nodes[0]))
        order = needed(stages, target, meta_env, escape)
        offsets: dict[int, int] = {}
        total = 0
        for index in order:
            offsets[index] = total
            total += 1 + len(stages[index].instructions)
        self.cache_from = await self._cache_sources()
        sequencer = Sequencer(order, self.emit)
        loop = asyncio.get_running_loop()
        self.results = {index: loop.create_future() for index in order}
        async with lease(self.builder.client, "build") as lease_id:
            self.lease_id = lease_id
            try:
                async with asyncio.TaskGroup() as group:
                    for index in order:
                        group.create_task(self._stage(stages[index], offsets[index], total, sequencer))
            except BaseExceptionGroup as group_error:
                await sequencer.flush()
                raise _first(group_error) from None
            final = self.results[target.index].result()
            if final is None:
                raise BuildFailed("No image was generated. Is your Dockerfile empty?")
            unused = sorted(k for k in options.build_args if k not in self.used_args and k not in PREDEFINED_ARGS)
            if unused and not options.quiet:
                await self.emit({"stream": f"[Warning] One or more build-args [{' '.join(unused)}] were not "
                                           "consumed\n"})
            familiar = await self.builder.exporter.name(final, options.tags)
        await self.builder.cache.save()
        await self.emit({"aux": {"ID": final.id}})
        if options.quiet:
            await self.emit({"stream": f"{final.id}\n"})
            return final.id
        await self.emit({"stream": f"Successfully built {short(final.id)}\n"})
        for name in familiar:
            await self.emit({"stream": f"Successfully tagged {name}\n"})
        return final.id

    async def _cache_sources(self) -> list[str]:
        out = []
        for ref in self.options.cache_from:
            try:
                out.append((await self.builder.images.get(ref)).id)
            except errors.NarwhalError:
                continue  # as moby: a cache source that is not there is skipped
        return out

    async def _stage(self, stage: Stage, offset: int, total: int, sequencer: Sequencer) -> None:
        write = sequencer.writer(stage.index)
        steps = StageSteps(self, write)
        try:
            async with contextlib.AsyncExitStack() as views:
                steps.views = views
                await steps.out(f"Step {offset + 1}/{total} : {stage.node.original}\n")
                image = await self._base(stage, write)
                doc = await self.builder.exporter.document(image)
                state = StageState(image, initial_config(doc))
                if image is not None:
                    await steps.out(f" ---> {short(image.id)}\n")
                triggers = list(state.config.get("OnBuild") or [])
                if triggers:
                    state.config["OnBuild"] = None
                    await steps.out(f"# Executing {len(triggers)} build trigger{'s' if len(triggers) > 1 else ''}\n")
                    for text in triggers:
                        await dispatch(steps, state, instruction(parse(text).nodes[0]))
                for n, inst in enumerate(stage.instructions, start=offset + 2):
                    await steps.out(f"Step {n}/{total} : {inst.text}\n")
                    await self._step(steps, state, inst)
                    if state.image is not None:
                        await steps.out(f" ---> {short(state.image.id)}\n")
            self.results[stage.index].set_result(state.image)
        except BaseException as exc:
            if not self.results[stage.index].done():
                self.results[stage.index].set_exception(exc if isinstance(exc, Exception) else
                                                        BuildFailed("build cancelled"))
                self.results[stage.index].exception()  # retrieved: no "never retrieved" warning
            raise
        await sequencer.finish(stage.index)

    async def _step(self, steps: StageSteps, state: StageState, inst: Instruction) -> None:
        try:
            await dispatch(steps, state, inst)
        except BuildFailed:
            raise
        except errors.NarwhalError as exc:
            if inst.kind in ("copy", "add") and not exc.message.startswith(inst.kind.upper()):
                raise BuildFailed(f"{inst.kind.upper()} failed: {exc.message}") from None
            raise

    async def _base(self, stage: Stage, write: Emit) -> Image | None:
        meta_env = {k: v for k, v in self.meta.items() if v is not None}
        name = process_word(stage.base, meta_env, self.parsed.escape)
        if not name:
            raise BuildFailed("base name (" + stage.base + ") should not be blank")
        dep = find_stage(self.parsed.stages[:stage.index], name) if not name.isdigit() else None
        if dep is not None:
            return await self.results[dep.index]
        if name.lower() == "scratch":
            return None
        platform = process_word(stage.platform, meta_env, self.parsed.escape) if stage.platform else \
            self.options.platform
        return await self.image(name, write, platform)

    async def image(self, name: str, write: Emit, platform: str = "") -> Image:
        """A base image: the local one unless ``pull`` (or missing), else pulled with the build's credentials."""
        images = self.builder.images
        parsed = reference.parse(name)
        if not self.options.pull:
            try:
                return await images.get(str(parsed))
            except errors.NotFound:
                pass
        familiar = parsed.familiar()
        if not self.options.quiet:
            await write({"status": f"Pulling from {reference.parse(name, default_tag=False).familiar()}",
                         "id": parsed.tag or parsed.digest})
        async with self.builder.images.keeping_displaced([str(parsed)]):
            image = await images.pull(str(parsed), _auth(self.options.auth, parsed.domain),
                                      platform=platform or None)
        if not self.options.quiet:
            await write({"status": f"Digest: {image.target.digest}"})
            await write({"status": f"Status: Downloaded newer image for {familiar}"})
        if self.builder.events is not None:
            self.builder.events.publish_docker("image", "pull", familiar, {"name": familiar})
        return image


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _auth(auths: dict[str, RegistryAuth], domain: str) -> RegistryAuth | None:
    keys = [domain]
    if domain == "docker.io":
        keys += ["https://index.docker.io/v1/", "index.docker.io", "registry-1.docker.io"]
    for key in keys:
        for candidate in (key, f"https://{key}", f"http://{key}"):
            if candidate in auths:
                return auths[candidate]
    return None


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The exception that failed the build (not the cancellations it caused)."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first(exc)
        if not isinstance(exc, asyncio.CancelledError):
            return exc
    return group.exceptions[0]
