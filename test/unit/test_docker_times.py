"""dockerapi.times: Docker's times in (moby's GetTimestamp, ParseTimestamps) and out (Go's RFC 3339 forms)."""
from __future__ import annotations

import datetime as dt

from dockerapi import times

NOW = 1_700_000_000 * 10**9  # 2023-11-14T22:13:20Z


def test_written_times_read_back() -> None:
    assert times.unix("2023-11-14T22:13:20.123456789Z") == NOW // 10**9
    assert times.unix("2024-05-01T10:00:00.123456789Z") == 1714557600
    assert times.unix("") == 0 and times.unix("not a time") == 0
    parsed = times.parse_rfc3339("2023-11-14T22:13:20")  # no zone: UTC
    assert parsed is not None and parsed.tzinfo is dt.UTC


def test_written_forms() -> None:
    assert times.rfc3339_fixed(NOW) == "2023-11-14T22:13:20.000000000Z"
    assert times.rfc3339(NOW + 120_000_000) == "2023-11-14T22:13:20.12Z"
    assert times.rfc3339(times.timestamp("2023-11-14T22:13:20.5Z", 0)) == "2023-11-14T22:13:20.5Z"
