"""RUN: the command in a Docker container of the Docker domain (same runtime, seccomp, networks, resources),
created on the parent step's image; its output streamed as it comes; its snapshot diffed into the step's layer.

The container is a real Docker container (``docker ps -a`` shows it while it runs, its events are published); as
moby's classic builder does, it is removed after success, and after a failure only with forcerm.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from pkg import errors
from pkg.aio import run_to_completion
from pkg.docker.build.exporter import Holds, Layer
from pkg.docker.build.model import BuildFailed, BuildOptions
from pkg.docker.engine.engine import Engine
from pkg.docker.engine.model import ContainerSpec, HostConfig
from pkg.docker.views.logs import container_logs
from pkg.images.model import Image
from pkg.images.service import ImageService
from pkg.logs.reader import ReadOptions

log = logging.getLogger(__name__)

Output = Callable[[str], Awaitable[None]]
STDERR_START, STDERR_END = "\x1b[91m", "\x1b[0m"


def host_config(options: BuildOptions) -> HostConfig:
    mode = options.network_mode or "default"
    return HostConfig(network_mode="bridge" if mode == "default" else mode, extra_hosts=tuple(options.extra_hosts),
                      shm_size=options.shm_size, resources=options.resources, ulimits=tuple(options.ulimits),
                      security_opt=tuple(options.security_opt))


async def run_step(engine: Engine, images: ImageService, holds: Holds, parent: Image, argv: list[str], env: list[str],
                   config: dict[str, object], options: BuildOptions, lease_id: str, out: Output) -> Layer:
    spec = ContainerSpec(image=parent.id, entrypoint=tuple(argv), cmd=(), env=tuple(env),
                         working_dir=str(config.get("WorkingDir") or ""), user=str(config.get("User") or ""),
                         labels={})
    async with holds.hold(parent):
        container_id = await engine.create(spec, host_config(options))
    succeeded = ran = False
    try:
        await out(f" ---> Running in {container_id[:12]}\n")
        await engine.start(container_id)
        async with asyncio.TaskGroup() as group:  # the output is forwarded until the container is done
            group.create_task(_forward(engine, container_id, out))
            waiting = group.create_task(engine.wait(container_id))
        result = waiting.result()
        ran = True
        if result.status_code != 0:
            raise BuildFailed(f"The command '{' '.join(argv)}' returned a non-zero code: {result.status_code}",
                              result.status_code)
        metadata, _ = engine.containers.get(container_id)
        descriptor, diff_id = await images.diff_snapshot(metadata.snapshot_key or container_id, parent.chain_id,
                                                         lease_id)
        succeeded = True
        return Layer(descriptor, diff_id)
    finally:
        # As moby: kept after its command failed (unless forcerm), removed after success (unless rm=0); and
        # always removed when the build stopped for another reason (cancelled, the client gone).
        if (succeeded and options.remove) or options.force_remove or not ran:
            try:
                await run_to_completion(engine.remove_now(container_id, volumes=True))
                if succeeded:
                    await out(f"Removing intermediate container {container_id[:12]}\n")
            except errors.NarwhalError as exc:
                log.warning("build: could not remove intermediate container %s: %s", container_id[:12], exc.message)


async def _forward(engine: Engine, container_id: str, out: Output) -> None:
    """The container's output as the classic builder streams it: stderr between red-colour escapes."""
    async for entry in container_logs(engine.containers, container_id, ReadOptions(follow=True)):
        text = entry.content.decode(errors="replace")
        if entry.stream == "stderr":
            text = f"{STDERR_START}{text}{STDERR_END}"
        await out(text)
