"""The builder as one stage's dispatcher sees it (dispatch.Steps): output, cache lookups and records, the
exporter, RUN and filesystem steps, and where COPY reads from (the context, a stage, an image)."""
from __future__ import annotations

import asyncio
import contextlib
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pkg import errors
from pkg import metrics as metrics_mod
from pkg.docker.build import context as build_context
from pkg.docker.build.dispatch import Planner, StageState
from pkg.docker.build.dockerfile.instructions import find_stage
from pkg.docker.build.exporter import Layer
from pkg.docker.build.fsstep import fs_step
from pkg.docker.build.model import Emit
from pkg.docker.build.run import run_step
from pkg.docker.views.rootfs_access import image_view
from pkg.images.model import Image

if TYPE_CHECKING:
    from pkg.docker.build.builder import BuildRun


@dataclass
class Tree:
    """Where COPY reads from: the context, or a mounted image/stage filesystem."""

    path: Path
    context: build_context.BuildContext | None = None

    def checksum(self, path: Path) -> str:
        if self.context is not None:
            return self.context.checksum(path)
        return build_context.tree_checksum(path)



class StageSteps:
    """The dispatcher's view of the build for one stage (dispatch.Steps)."""

    def __init__(self, run: BuildRun, write: Emit) -> None:
        self._run = run
        self._write = write
        self.views: contextlib.AsyncExitStack | None = None
        self._trees: dict[str, Tree] = {}

    async def out(self, text: str) -> None:
        if not self._run.options.quiet:
            await self._write({"stream": text})

    @property
    def build_args(self) -> dict[str, str | None]:
        return self._run.options.build_args

    @property
    def meta_args(self) -> dict[str, str | None]:
        return self._run.meta

    @property
    def escape(self) -> str:
        return self._run.parsed.escape

    def use_arg(self, name: str) -> None:
        self._run.used_args.add(name)

    async def cached(self, key: str) -> Image | None:
        run, builder = self._run, self._run.builder
        if run.options.no_cache:
            return None
        entry = await builder.cache.lookup(key)
        if entry is None:
            return None
        if run.options.cache_from:
            if not await self._in_sources(entry.image_id):
                return None
        try:
            image = await builder.exporter.image(entry.image_id, entry.descriptor)
        except errors.NarwhalError:
            return None  # content collected meanwhile: build the step again
        metrics_mod.current().build_steps.labels("cached").inc()
        return image

    async def _in_sources(self, image_id: str) -> bool:
        cache = self._run.builder.cache
        for source in self._run.cache_from:
            current, seen = source, 0
            while current and seen < 1000:
                if current == image_id:
                    return True
                current = await cache.parent_of(current)
                seen += 1
        return False

    async def commit(self, key: str, state: StageState, created_by: str, layer: Layer | None) -> Image:
        run = self._run
        builder = run.builder
        image = await builder.exporter.write(state.image, state.config, created_by, layer, run.lease_id)
        metrics_mod.current().build_steps.labels("executed").inc()
        await builder.cache.record(key, image.id, image.target, state.image.id if state.image else "",
                                   layer.descriptor.size if layer is not None else 0, created_by)
        return image

    async def run(self, state: StageState, argv: list[str], env: list[str]) -> Layer:
        run = self._run
        assert state.image is not None
        return await run_step(run.builder.engine, run.builder.images, run.builder.holds, state.image, argv, env,
                              state.config, run.options, run.lease_id, self.out)

    async def fs(self, state: StageState, planner: Planner) -> Layer | None:
        run = self._run
        return await fs_step(run.builder.client, run.builder.images, state.image, run.lease_id, run.scratch,
                             planner)

    def tmpdir(self) -> Path:
        path = self._run.scratch / f"src-{secrets.token_hex(6)}"
        path.mkdir(mode=0o700)
        return path

    async def source_root(self, ref: str) -> tuple[Tree, bool]:
        run = self._run
        if not ref:
            return Tree(run.context.root, run.context), True
        if ref in self._trees:
            return self._trees[ref], False
        stage = find_stage(run.parsed.stages, ref)
        if stage is not None:
            image = await run.results[stage.index]
        else:
            image = await run.image(ref, self._write)
        if image is None:  # a scratch stage with nothing in it
            empty = run.scratch / f"empty-{secrets.token_hex(4)}"
            await asyncio.to_thread(empty.mkdir)
            tree = Tree(empty)
        else:
            assert self.views is not None
            root = await self.views.enter_async_context(image_view(run.builder.client, image))
            if root is None:
                raise errors.NotImplementedYet(f"cannot read the files of image {image.id}")
            tree = Tree(root)
        self._trees[ref] = tree
        return tree, False
