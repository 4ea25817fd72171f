"""A container's stdio: where containerd's shim sends stdout/stderr (the CRI log via
narwhal-logger) and how we learn that the container was OOM-killed."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pkg.logs import binary as log_binary
from pkg.model.container import ContainerMetadata
from pkg.runtime.context import RuntimeContext


@dataclass(frozen=True)
class Stdio:
    stdin: str = ""
    stdout: str = ""
    stderr: str = ""


def logger_pid_file(ctx: RuntimeContext, container_id: str) -> Path:
    return ctx.container_state(container_id) / "logger.pid"


def stdio_for(ctx: RuntimeContext, metadata: ContainerMetadata) -> Stdio:
    """stdout and stderr go to narwhal-logger (run by the shim, so logging outlives narwhald);
    with a TTY there is only one stream.  No log path: output is discarded, as containerd does."""
    if not metadata.log_path:
        return Stdio()
    pid_file = logger_pid_file(ctx, metadata.id)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    uri = log_binary.logger_uri(metadata.log_path, pid_file=pid_file, tty=metadata.config.tty)
    return Stdio(stdout=uri, stderr="" if metadata.config.tty else uri)


async def reopen_log(ctx: RuntimeContext, metadata: ContainerMetadata) -> None:
    await log_binary.reopen_container_log(logger_pid_file(ctx, metadata.id))


def oom_killed(metadata: ContainerMetadata) -> bool:
    """Fallback when no /tasks/oom event was seen: the cgroup's OOM-kill counter."""
    try:
        from pkg.cgroups import oom  # type: ignore[attr-defined]
    except ImportError:
        return False
    return bool(oom.was_oom_killed(metadata.cgroups_path))
