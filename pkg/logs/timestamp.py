"""RFC3339Nano timestamps for CRI log records; importing this costs no more than ``time``
(``calendar`` is imported only when parsing).

The shim-side logger imports this module alone, to start fast.
"""
from __future__ import annotations

import time


class LogFormatError(ValueError):
    """A line (or timestamp) that is not in the CRI log format."""


class TimestampFormatter:
    """Formats nanosecond times as RFC3339Nano in UTC, caching the per-second prefix.

    Fixed nine fraction digits (Go's parser, the kubelet's included, accepts
    any fraction length; fixed width keeps files sortable as text).
    """

    __slots__ = ("_second", "_prefix")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = b""

    def format(self, ns: int) -> bytes:
        second, frac = divmod(ns, 1_000_000_000)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second)).encode()
        return b"%s%09dZ" % (self._prefix, frac)


_formatter = TimestampFormatter()


def format_timestamp(ns: int) -> bytes:
    return _formatter.format(ns)


_last_second: tuple[str, str, int] = ("", "", 0)  # (date-time prefix, zone, seconds): log lines share seconds


def parse_timestamp(value: bytes | str) -> int:
    """Parse an RFC3339 / RFC3339Nano timestamp (any fraction length, ``Z`` or ``±hh:mm``) to ns.

    Consecutive log records mostly fall in the same second, so the seconds of the
    last date-time prefix are cached: reading a big log costs one calendar call per second.
    """
    global _last_second
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    cached_prefix, cached_zone, cached_seconds = _last_second
    if len(text) == 30 and cached_zone == "Z" and text[29] == "Z" and text[19] == "." \
            and text.startswith(cached_prefix) and text[20:29].isdigit():  # what narwhal-logger writes
        return cached_seconds * 1_000_000_000 + int(text[20:29])
    try:
        prefix, rest = text[:19], text[19:]
        frac_ns = 0
        if rest.startswith("."):
            end = 1
            while end < len(rest) and rest[end].isdigit():
                end += 1
            digits = rest[1:end]
            if not digits or len(digits) > 9:
                raise ValueError
            frac_ns = int(digits.ljust(9, "0"))
            rest = rest[end:]
        if prefix == cached_prefix and rest == cached_zone:
            return cached_seconds * 1_000_000_000 + frac_ns
        seconds = _seconds(text, prefix, rest)
    except (ValueError, IndexError):
        raise LogFormatError(f"invalid RFC3339 timestamp {text!r}") from None
    _last_second = (prefix, rest, seconds)
    return seconds * 1_000_000_000 + frac_ns


def _seconds(text: str, prefix: str, zone: str) -> int:
    if len(text) < 20 or len(prefix) != 19 or text[4] != "-" or text[7] != "-" or text[10] not in "Tt" \
            or text[13] != ":" or text[16] != ":":
        raise ValueError
    year, month, day = int(text[0:4]), int(text[5:7]), int(text[8:10])
    hour, minute, sec = int(text[11:13]), int(text[14:16]), int(text[17:19])
    if zone in ("Z", "z"):
        offset = 0
    elif len(zone) == 6 and zone[0] in "+-" and zone[3] == ":":
        offset = (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60) * (1 if zone[0] == "+" else -1)
    else:
        raise ValueError
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and sec < 61):
        raise ValueError
    import calendar  # parsing only: the logger, which only formats, never pays for it

    return calendar.timegm((year, month, day, hour, minute, sec, 0, 0, 0)) - offset
