"""Samples per benchmark and system, their percentiles and Narwhal/anchor ratios; JSON in and out."""
from __future__ import annotations

import math
import statistics
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

NARWHAL = "narwhal"


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (p50 of an even count is the lower middle: no invented values)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass
class Row:
    """One benchmark: samples per system (``narwhal`` and its anchor), or why a system has none."""

    group: str
    name: str
    unit: str
    anchor: str
    lower_is_better: bool = True
    target: float | None = None  # the ratio Narwhal/anchor must not exceed (must reach, for throughput), if any
    limit: float | None = None  # an absolute bound on Narwhal's p50 (issue 9), if any
    note: str = ""
    samples: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    failures: dict[str, list[str]] = field(default_factory=dict)  # rounds that failed, when others did not

    def failed(self, system: str, err: BaseException) -> None:
        """One round failed: counted; the row is n/a for ``system`` only if no round succeeds."""
        self.failures.setdefault(system, []).append(_message(err))
        if not self.samples.get(system):
            self.errors[system] = self.failures[system][0]

    def p50(self, system: str) -> float | None:
        values = self.samples.get(system)
        return statistics.median(values) if values else None

    def p95(self, system: str) -> float | None:
        values = self.samples.get(system)
        return percentile(values, 0.95) if values else None

    def ratio(self) -> float | None:
        mine, theirs = self.p50(NARWHAL), self.p50(self.anchor)
        if mine is None or theirs is None or theirs == 0:
            return None
        return mine / theirs

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["summary"] = {s: {"p50": self.p50(s), "p95": self.p95(s), "n": len(v)} for s, v in self.samples.items()}
        data["ratio"] = self.ratio()
        return data


class Results:
    def __init__(self) -> None:
        self.rows: list[Row] = []
        # title -> {"unit": what one "call per" counts, "calls": per-call means} (breakdown.py)
        self.breakdown: dict[str, dict[str, Any]] = {}
        # "<system>, <n> pods" -> PSS (MiB) per daemon and per kind of per-pod process (density.py)
        self.profiles: dict[str, dict[str, Any]] = {}

    def row(self, group: str, name: str, unit: str, anchor: str, **kwargs: Any) -> Row:
        for row in self.rows:
            if row.group == group and row.name == name:
                return row
        row = Row(group, name, unit, anchor, **kwargs)
        self.rows.append(row)
        return row

    def add(self, group: str, name: str, system: str, value: float) -> None:
        self.get(group, name).samples.setdefault(system, []).append(value)

    def get(self, group: str, name: str) -> Row:
        for row in self.rows:
            if row.group == group and row.name == name:
                return row
        raise KeyError(f"{group}/{name} was not declared")

    def fail(self, group: str, names: list[str], system: str, err: BaseException) -> None:
        """Record ``n/a (error: ...)`` for these rows and system instead of crashing the run."""
        message = _message(err)
        for name in names:
            row = self.get(group, name)
            row.samples.pop(system, None)
            row.errors[system] = message

    @contextmanager
    def guard(self, group: str, names: list[str], system: str, log: Callable[[str], None]) -> Iterator[None]:
        try:
            yield
        except Exception as err:  # noqa: BLE001 - one broken path must not cost the whole run
            log(f"  {system} {group}/{', '.join(names)} failed:\n{traceback.format_exc()}")
            self.fail(group, names, system, err)

    def to_json(self) -> list[dict[str, Any]]:
        return [row.to_json() for row in self.rows]


def _message(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}".strip().splitlines()[0][:200] if str(err) else type(err).__name__
