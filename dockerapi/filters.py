"""Docker's ``filters`` query parameter (moby's api/types/filters).

Every list and prune endpoint reads ``filters`` through :func:`parse`, so they all accept the same two
JSON forms, refuse unknown keys with Docker's ``invalid filter 'x'`` and match labels alike.  What each
key means for a resource stays with its handler.
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from typing import Any

from aiohttp import web

from dockerapi import times
from pkg import errors

Filters = dict[str, list[str]]

def parse(raw: str | None, allowed: Iterable[str]) -> Filters:
    """``{"key": {"value": true}}`` or the older ``{"key": ["value"]}``; a key outside ``allowed`` is refused
    (moby's FromJSON + Validate).  In the map form a value set to false is left out."""
    if not raw:
        return {}
    try:
        data: Any = json.loads(raw)
    except ValueError:
        raise errors.InvalidArgument(f"invalid filter: {raw}") from None
    if not isinstance(data, dict):
        raise errors.InvalidArgument(f"invalid filter: {raw}")
    known = set(allowed)
    out: Filters = {}
    for key, values in data.items():
        if key not in known:
            raise errors.InvalidArgument(f"invalid filter '{key}'")
        if isinstance(values, dict):
            out[key] = [str(v) for v, on in values.items() if on]
        elif isinstance(values, list):
            out[key] = [str(v) for v in values]
        else:
            raise errors.InvalidArgument(f"invalid filter '{key}': expected a list or a map of values")
    return out


def query(request: web.Request, allowed: Iterable[str]) -> Filters:
    """The request's ``filters`` parameter, parsed and checked."""
    return parse(request.query.get("filters"), allowed)


def _invalid(key: str, values: list[str]) -> errors.InvalidArgument:
    """moby's invalidFilter with values: ``invalid filter 'key=[v1 v2]'``."""
    return errors.InvalidArgument(f"invalid filter '{key}=[{' '.join(values)}]'")


def bool_value(filters: Mapping[str, list[str]], key: str) -> bool | None:
    """A boolean filter (``dangling``, ``all``, ...): None when absent; "1"/"true" or "0"/"false", not both
    (moby's GetBoolOrDefault; case is ignored)."""
    values = filters.get(key)
    if not values:
        return None
    lowered = {v.lower() for v in values}
    is_true = bool(lowered & {"1", "true"})
    is_false = bool(lowered & {"0", "false"})
    if is_true == is_false:  # neither (invalid) or both (conflicting)
        raise _invalid(key, values)
    return is_true


def labels_match(labels: Mapping[str, str], wanted: Iterable[str]) -> bool:
    """Every ``key`` (present) or ``key=value`` (present with that value) in ``wanted`` holds (MatchKVList)."""
    for item in wanted:
        key, sep, value = item.partition("=")
        if key not in labels or (sep and labels[key] != value):
            return False
    return True


def labels_selected(filters: Mapping[str, list[str]], labels: Mapping[str, str]) -> bool:
    """``label`` filters all hold and no ``label!`` filter does (the label half of every prune)."""
    if not labels_match(labels, filters.get("label", ())):
        return False
    return not any(labels_match(labels, (item,)) for item in filters.get("label!", ()))


def until(filters: Mapping[str, list[str]], now_ns: int | None = None) -> float | None:
    """A prune's ``until`` as Unix seconds (moby's getUntilFromPruneFilters): objects created after it stay."""
    values = filters.get("until")
    if not values:
        return None
    if len(values) > 1:
        raise errors.InvalidArgument("more than one until filter specified")
    return times.timestamp(values[0], time.time_ns() if now_ns is None else now_ns) / 1e9
