"""The stage graph: what a target needs, and output of parallel stages serialised in stage order."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pkg import errors
from pkg.docker.build.dockerfile.instructions import parse_stages
from pkg.docker.build.dockerfile.parser import parse
from pkg.docker.build.graph import Sequencer, needed

DOCKERFILE = (
    "ARG BASE=busybox\n"
    "FROM ${BASE} AS a\nRUN true\n"
    "FROM busybox AS b\nRUN true\n"
    "FROM busybox AS unused\nRUN true\n"
    "FROM a AS c\nCOPY --from=b /x /x\n"
    "FROM busybox\nCOPY --from=c /x /x\nCOPY --from=alpine:3 /y /y\n"
)


def test_needed_follows_from_and_copy_from() -> None:
    parsed = parse_stages(parse(DOCKERFILE))
    stages = parsed.stages
    assert needed(stages, stages[-1], {"BASE": "busybox"}, "\\") == [0, 1, 3, 4]
    assert needed(stages, stages[3], {}, "\\") == [0, 1, 3]
    assert needed(stages, stages[2], {}, "\\") == [2]


def test_copy_from_a_later_stage_is_refused() -> None:
    parsed = parse_stages(parse("FROM busybox AS a\nCOPY --from=b /x /x\nFROM busybox AS b\n"))
    with pytest.raises(errors.InvalidArgument, match="refers to current or later build stage"):
        needed(parsed.stages, parsed.stages[0], {}, "\\")


def test_sequencer_keeps_stage_order() -> None:
    async def scenario() -> list[str]:
        out: list[str] = []

        async def emit(message: dict[str, Any]) -> None:
            out.append(message["stream"])

        seq = Sequencer([0, 1, 2], emit)
        first, second, third = seq.writer(0), seq.writer(1), seq.writer(2)
        await second({"stream": "b1"})  # a later stage runs ahead: held back
        await first({"stream": "a1"})
        await third({"stream": "c1"})
        await seq.finish(1)
        await first({"stream": "a2"})
        await seq.finish(0)  # stage 1 done already: its output, then stage 2's, then stage 2 is live
        await third({"stream": "c2"})
        await seq.finish(2)
        return out

    assert asyncio.run(scenario()) == ["a1", "a2", "b1", "c1", "c2"]


def test_sequencer_flush_after_a_failure() -> None:
    async def scenario() -> list[str]:
        out: list[str] = []

        async def emit(message: dict[str, Any]) -> None:
            out.append(message["stream"])

        seq = Sequencer([0, 1], emit)
        await seq.writer(1)({"stream": "b-failed"})
        await seq.writer(0)({"stream": "a-partial"})
        await seq.flush()
        return out

    assert asyncio.run(scenario()) == ["a-partial", "b-failed"]
