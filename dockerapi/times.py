"""Docker's times: what clients send (moby's api/types/time: Go durations, RFC 3339 dates, Unix seconds) and
what the API writes (RFC 3339 in UTC, as Go formats a time.Time), in one place for every handler."""
from __future__ import annotations

import datetime as dt
import re

from pkg import errors

ZERO_TIME = "0001-01-01T00:00:00Z"  # Go's zero time.Time: "never" in Docker's JSON
_DURATION = re.compile(r"^(?:(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h))+\Z", re.ASCII)
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000,
            "h": 3_600_000_000_000}
# Without a zone a date is local time, as moby's timetypes.GetTimestamp.
_TIME_LAYOUTS = ("%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M%z", "%Y-%m-%dT%H:%M",
                 "%Y-%m-%dT%H%z", "%Y-%m-%dT%H", "%Y-%m-%d%z", "%Y-%m-%d")
_FRACTION = re.compile(r"(?<=T\d\d:\d\d:\d\d)\.(\d{1,9})", re.ASCII)
_SECONDS = re.compile(r"^(-?\d+)(?:\.(\d{1,9}))?\Z", re.ASCII)
_ANY_FRACTION = re.compile(r"\.(\d+)", re.ASCII)


def timestamp(value: str, now_ns: int) -> int:
    """moby's timetypes.GetTimestamp, in ns: a Go duration before now, an RFC 3339 date (local time without a
    zone) or a Unix timestamp with up to nine fraction digits."""
    value = value.strip()
    if value != "0" and _DURATION.match(value):
        ago = sum(float(n) * _UNIT_NS[unit] for n, unit in _DURATION_PART.findall(value))
        return now_ns - int(ago)
    nanos = 0
    sub_second = _FRACTION.search(value)
    if sub_second:  # RFC 3339 allows nanoseconds; strptime takes microseconds at most
        nanos = int((sub_second.group(1) + "000000000")[:9])
        value = value[:sub_second.start()] + value[sub_second.end():]
    for layout in _TIME_LAYOUTS:
        try:
            parsed = dt.datetime.strptime(value.replace("Z", "+0000"), layout)
        except ValueError:
            continue
        return int(parsed.timestamp()) * 1_000_000_000 + nanos
    whole, _, fraction = value.partition(".")
    digits = whole.lstrip("-") + fraction
    if whole.lstrip("-") and digits.isascii() and digits.isdigit():
        return int(whole) * 1_000_000_000 + int((fraction + "000000000")[:9])
    raise errors.InvalidArgument(f"failed to parse value as time or duration: {value!r}")


def unix_ns(value: str, name: str) -> int | None:
    """``seconds[.nanoseconds]`` (what the CLI sends for logs --since/--until, moby's ParseTimestamps) → ns;
    "" or not after the epoch → None."""
    value = value.strip()
    if not value:
        return None
    match = _SECONDS.match(value)
    if match is None:
        raise errors.InvalidArgument(f"invalid value for {name}: {value!r}")
    whole = int(match.group(1))
    nanos = int((match.group(2) or "").ljust(9, "0"))
    total = whole * 1_000_000_000 + (nanos if whole >= 0 else -nanos)
    return total if total > 0 else None


def parse_rfc3339(value: str) -> dt.datetime | None:
    """A time this daemon wrote (image and network records): RFC 3339 with any number of fraction digits
    (Go writes nanoseconds, Python reads microseconds at most); None when it is not one."""
    if not value:
        return None
    text = _ANY_FRACTION.sub(lambda m: "." + m.group(1)[:6].ljust(6, "0"), value.strip())
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def unix(value: str) -> int:
    """An RFC 3339 time as Unix seconds; 0 when there is none."""
    parsed = parse_rfc3339(value)
    return int(parsed.timestamp()) if parsed is not None else 0


def _base(ns: int) -> tuple[str, int]:
    whole, nanos = divmod(ns, 1_000_000_000)
    return dt.datetime.fromtimestamp(whole, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S"), nanos


def rfc3339_fixed(ns: int) -> str:
    """moby's RFC3339NanoFixed: always nine fraction digits (log timestamps, stats ``read``)."""
    base, nanos = _base(ns)
    return f"{base}.{nanos:09d}Z"


def rfc3339(ns: int) -> str:
    """Go's RFC3339Nano, trailing zeros trimmed (how a time.Time marshals to JSON)."""
    base, nanos = _base(ns)
    fraction = f".{nanos:09d}".rstrip("0").rstrip(".")
    return f"{base}{fraction}Z"
