"""systemd's readiness protocol (sd_notify), spoken directly: no libsystemd, no new dependency.

Under ``Type=notify`` systemd passes ``NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract
namespace) and, with ``WatchdogSec=``, ``WATCHDOG_USEC`` (and ``WATCHDOG_PID``).  narwhald sends
``STATUS=`` lines while it recovers, ``READY=1`` once both sockets accept calls, ``RELOADING=1`` /
``READY=1`` around a SIGHUP reload, ``STOPPING=1`` on shutdown and ``WATCHDOG=1`` every half
watchdog period.  The variables are removed from our environment at once (as sd_notify's
``unset_environment`` does): the containerd narwhald starts speaks the same protocol and would
otherwise report *its* readiness on our socket.  Without ``NOTIFY_SOCKET`` every call is a no-op.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import MutableMapping

log = logging.getLogger(__name__)

ENV_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
# A datagram to a receiver whose queue is full blocks: the event loop must never wait on systemd for long.
SEND_TIMEOUT = 0.2


def _address(value: str) -> str | None:
    """The socket address of ``NOTIFY_SOCKET``: a path or an abstract name (``@`` -> NUL)."""
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None  # vsock: and relative paths are not for us


def _watchdog_interval(env: MutableMapping[str, str]) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), or None when not asked of us."""
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None  # meant for another process (e.g. a wrapper's parent)
    return int(usec) / 2 / 1_000_000


class Notifier:
    """Sends sd_notify datagrams; silent (and never failing) when there is no socket."""

    def __init__(self, address: str | None = None, watchdog_interval: float | None = None) -> None:
        self.address = address
        self.watchdog_interval = watchdog_interval
        self._sock: socket.socket | None = None

    @classmethod
    def from_env(cls, env: MutableMapping[str, str] | None = None) -> Notifier:
        """Read and remove the protocol's variables (children must not inherit them)."""
        env = os.environ if env is None else env
        address = _address(env.get("NOTIFY_SOCKET", ""))
        interval = _watchdog_interval(env)
        for name in ENV_VARS:
            env.pop(name, None)
        return cls(address, interval if address else None)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """One datagram of ``KEY=value`` lines; False (logged at debug) when it could not be sent."""
        if self.address is None:
            return False
        message = "\n".join(f.replace("\n", " ") for f in fields).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.settimeout(SEND_TIMEOUT)
            self._sock.sendto(message, self.address)
        except OSError as exc:
            log.debug("sd_notify %s: %s", self.address.replace("\0", "@"), exc)
            return False
        return True

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def ready(self, text: str = "") -> None:
        self.send("READY=1", *([f"STATUS={text}"] if text else []))

    def reloading(self) -> None:
        # MONOTONIC_USEC lets systemd (Type=notify-reload) tell this reload from an older one.
        self.send("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")

    def stopping(self, text: str = "") -> None:
        self.send("STOPPING=1", *([f"STATUS={text}"] if text else []))

    async def watchdog(self) -> None:
        """Ping every half period while the event loop runs (a wedged loop stops the pings)."""
        if self.watchdog_interval is None:
            return
        while True:
            self.send("WATCHDOG=1")
            await asyncio.sleep(self.watchdog_interval)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
