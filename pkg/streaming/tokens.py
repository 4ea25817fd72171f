"""Single-use, expiring tokens that stand for one exec/attach/port-forward request.

As in kubelet's streaming server: the RPC validates the request and mints a
token; the URL it returns carries only the token, and the first connection
that presents it consumes it.  Tokens are unguessable, expire after ``ttl``,
and at most ``max_in_flight`` may be outstanding (ResourceExhausted beyond).
"""
from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable

from pkg import errors
from pkg.streaming.model import StreamRequest

DEFAULT_TTL = 60.0
DEFAULT_MAX_IN_FLIGHT = 1000


class TokenCache:
    def __init__(self, ttl: float = DEFAULT_TTL, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._max = max_in_flight
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, StreamRequest]] = OrderedDict()  # oldest first

    def _expire(self) -> None:
        now = self._clock()
        while self._entries:
            token, (deadline, _) = next(iter(self._entries.items()))
            if deadline > now:
                break
            del self._entries[token]

    def __len__(self) -> int:
        self._expire()
        return len(self._entries)

    def mint(self, request: StreamRequest) -> str:
        self._expire()
        if len(self._entries) >= self._max:
            raise errors.ResourceExhausted(
                f"too many pending streaming requests ({self._max}); try again later")
        token = secrets.token_urlsafe(24)
        self._entries[token] = (self._clock() + self._ttl, request)
        return token

    def consume(self, token: str) -> StreamRequest | None:
        """The request for ``token`` and forget it; None if unknown, used or expired."""
        self._expire()
        entry = self._entries.pop(token, None)
        return entry[1] if entry is not None else None
