"""Running one CNI plugin binary: the spec's environment and stdin, a timeout, error translation.

Each call is an asyncio subprocess (never blocking the loop) bounded by a
timeout; a plugin that hangs is killed with its whole process group and the
call fails with DeadlineExceeded.  Plugins die with narwhald (PDEATHSIG, set
by util-linux ``setpriv`` before it execs the plugin: no Python runs in the
forked child of this multi-threaded process), so a crashed daemon leaves no
plugin half-way through a change that the next start's GC would race with.  A failing plugin's CNI error JSON (``code``,
``msg``, ``details``) becomes the matching ``pkg.errors`` kind carrying its
message.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pkg import errors
from pkg import metrics as metrics_mod

log = logging.getLogger(__name__)


# CNI spec error codes → kinds.  Codes above 99 are plugin-specific: they say
# the plugin could not do its job, which to a caller is an internal failure.
_CODES: dict[int, type[errors.NarwhalError]] = {
    1: errors.FailedPrecondition,  # incompatible CNI version
    2: errors.InvalidArgument,  # unsupported field in network configuration
    3: errors.NotFound,  # container unknown or does not exist
    4: errors.InvalidArgument,  # invalid necessary environment variables
    5: errors.Internal,  # I/O failure
    6: errors.InvalidArgument,  # failed to decode content
    7: errors.FailedPrecondition,  # invalid network config
    11: errors.Unavailable,  # try again later
}

MAX_STDERR = 4096
_SETPRIV = shutil.which("setpriv")


@dataclass(frozen=True)
class Invocation:
    """What one plugin call needs besides its stdin config."""

    command: str  # ADD, DEL, CHECK, VERSION
    container_id: str = ""
    netns: str = ""
    ifname: str = ""
    args: str = ""  # CNI_ARGS, "K=V;K=V"


def find_plugin(plugin_type: str, bin_dirs: list[Path]) -> Path:
    """The first executable named ``plugin_type`` on the bin dirs (FailedPrecondition otherwise)."""
    if not plugin_type or "/" in plugin_type or plugin_type in (".", ".."):
        raise errors.InvalidArgument(f"invalid CNI plugin type {plugin_type!r}")
    for directory in bin_dirs:
        candidate = directory / plugin_type
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    searched = ":".join(str(d) for d in bin_dirs)
    raise errors.FailedPrecondition(f"CNI plugin {plugin_type!r} not found in {searched}")


def plugin_error(plugin: str, command: str, data: Any, fallback: str) -> errors.NarwhalError:
    """The pkg error for a failed call: from the CNI error JSON when there is one."""
    if isinstance(data, dict) and (data.get("msg") or data.get("code")):
        code = data.get("code")
        kind = _CODES.get(code, errors.Internal) if isinstance(code, int) else errors.Internal
        msg = str(data.get("msg") or f"error code {code}")
        details = str(data.get("details") or "")
        text = f"CNI plugin {plugin} {command} failed: {msg}" + (f" ({details})" if details else "")
        return kind(text)
    return errors.Internal(f"CNI plugin {plugin} {command} failed: {fallback}")


async def invoke(
    plugin: Path,
    inv: Invocation,
    stdin: dict[str, Any],
    bin_dirs: list[Path],
    timeout: float,
) -> dict[str, Any] | None:
    """Run ``plugin`` once; its decoded stdout (None when empty, as DEL may print nothing)."""
    with metrics_mod.current().cni_call(inv.command, plugin.name):
        return await _invoke(plugin, inv, stdin, bin_dirs, timeout)


async def _invoke(
    plugin: Path,
    inv: Invocation,
    stdin: dict[str, Any],
    bin_dirs: list[Path],
    timeout: float,
) -> dict[str, Any] | None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    env.update(
        CNI_COMMAND=inv.command,
        CNI_CONTAINERID=inv.container_id,
        CNI_NETNS=inv.netns,
        CNI_IFNAME=inv.ifname,
        CNI_ARGS=inv.args,
        CNI_PATH=":".join(str(d) for d in bin_dirs),
    )
    env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    name = plugin.name
    argv = [_SETPRIV, "--pdeathsig", "KILL", "--", str(plugin)] if _SETPRIV else [str(plugin)]
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            # One process group, so a timeout kills iptables children too.  No preexec_fn: Python code
            # in a child forked from this multi-threaded (gRPC) process can crash (seen: SIGSEGV).
            start_new_session=True,
        )
    except OSError as exc:
        raise errors.FailedPrecondition(f"CNI plugin {name}: cannot execute {plugin}: {exc.strerror}") from None
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(json.dumps(stdin).encode()), timeout)
    except TimeoutError:
        _kill_group(proc)
        await proc.wait()
        raise errors.DeadlineExceeded(
            f"CNI plugin {name} {inv.command} did not finish within {timeout:g}s and was killed"
        ) from None
    except BaseException:  # cancelled: do not leave the plugin running unsupervised
        _kill_group(proc)
        await asyncio.shield(proc.wait())
        raise
    err_text = stderr[-MAX_STDERR:].decode(errors="replace").strip()
    if err_text:
        log.debug("CNI plugin %s %s stderr: %s", name, inv.command, err_text)
    data: Any = None
    if stdout.strip():
        try:
            data = json.loads(stdout)
        except ValueError:
            data = None
            if proc.returncode == 0:
                raise errors.Internal(
                    f"CNI plugin {name} {inv.command} printed invalid JSON: {stdout[:200]!r}"
                ) from None
    if proc.returncode != 0:
        fallback = f"exit status {proc.returncode}" + (f": {err_text}" if err_text else "")
        raise plugin_error(name, inv.command, data, fallback)
    if data is not None and not isinstance(data, dict):
        raise errors.Internal(f"CNI plugin {name} {inv.command} printed {type(data).__name__}, not an object")
    return data


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
