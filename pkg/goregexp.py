"""Go regexp semantics for Docker's name filters, in linear time.

moby matches ``filters={"name": [...]}`` with Go's ``regexp`` (RE2: no
backreferences, no catastrophic backtracking).  Python's ``re`` backtracks:
``(a+)+$`` against ``aaaa…-`` takes exponential time and, on the shared event
loop, froze the whole daemon (CRI included).  google-re2 gives the same
syntax and guarantee as Go's engine.
"""
from __future__ import annotations

import functools
from typing import Any

import re2  # type: ignore[import-untyped]

_MAX_PATTERN = 4096  # a filter value longer than this is not a name pattern anyone means


@functools.lru_cache(maxsize=256)
def _compile(pattern: str) -> Any:
    options = re2.Options()
    options.max_mem = 8 << 20  # bounded DFA memory per pattern
    options.log_errors = False
    return re2.compile(pattern, options)


def search(pattern: str, text: str) -> bool | None:
    """Whether ``pattern`` matches anywhere in ``text``; None when it is not a valid (RE2) pattern."""
    if len(pattern) > _MAX_PATTERN:
        return None
    try:
        return _compile(pattern).search(text) is not None
    except re2.error:
        return None
