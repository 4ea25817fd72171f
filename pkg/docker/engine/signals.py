"""Docker's signal names and moby's stop sequence (containerStop).

Separate from pkg.docker.engine.lifecycle because two kinds of container use them: the engine's own, and
kubelet's containers as Docker shows them (pkg.docker.engine.pods_view), which have no Lifecycle.
"""
from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable

from pkg import errors


def parse_signal(value: str | int | None, default: int = int(signal.SIGKILL)) -> int:
    """"KILL", "SIGKILL", "9" or 9 → 9; Docker's "Invalid signal" error otherwise."""
    if value is None or value == "":
        return default
    text = str(value).strip()
    if (text.isascii() and text.isdigit()):
        number = int(text)
        if 0 < number < 65:
            return number
    else:
        name = text.upper()
        try:
            return int(signal.Signals[name if name.startswith("SIG") else f"SIG{name}"])
        except KeyError:
            pass
    raise errors.InvalidArgument(f"Invalid signal: {value}")


async def stop_sequence(container_id: str, number: int, timeout: int, exited: asyncio.Event,
                        event: Callable[..., None], send: Callable[[int], Awaitable[None]],
                        force: Callable[[], Awaitable[None]]) -> None:
    """moby's containerStop, for the engine's containers and kubelet's shown to Docker: the stop signal (a
    "kill" event), the wait (none with -t 0, for ever when negative), then SIGKILL (a second "kill") unless
    ``exited`` is set; "die" comes with the exit itself, "stop" once it is over."""
    event("kill", container_id, signal=str(number))
    await send(number)
    if timeout != 0:
        try:
            await asyncio.wait_for(exited.wait(), None if timeout < 0 else timeout)
        except TimeoutError:
            pass
    if not exited.is_set():
        event("kill", container_id, signal=str(int(signal.SIGKILL)))
        await force()
    event("stop", container_id)
