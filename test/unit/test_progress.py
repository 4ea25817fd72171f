"""Docker's JSON progress stream: bar text, the pull/push reporters, lazy head and in-stream errors."""
from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from dockerapi import progress
from pkg import errors
from pkg.images import media
from pkg.images.model import Progress

LAYER = "sha256:" + "ab" * 32
CONFIG = "sha256:" + "cd" * 32


def ev(status: str, current: int = 0, total: int = 100, digest: str = LAYER,
       media_type: str = media.OCI_LAYER_GZIP) -> Progress:
    return Progress("docker.io/library/busybox:latest", digest, media_type, status, current, total)


@pytest.mark.parametrize(("size", "text"), [
    (0, "0B"), (999, "999B"), (1000, "1kB"), (1536, "1.536kB"), (2097152, "2.097MB"), (3_500_000_000, "3.5GB"),
])
def test_human_size_is_go_units(size: int, text: str) -> None:
    assert progress.human_size(size) == text


def test_progress_bar_as_moby_renders_it() -> None:
    assert progress.progress_bar(0, 0) == ""
    half = progress.progress_bar(1_000_000, 2_000_000)
    assert half == "[" + "=" * 25 + ">" + " " * 25 + "]      1MB/2MB"
    assert progress.progress_bar(2_000_000, 2_000_000).startswith("[" + "=" * 50 + ">]")
    assert progress.progress_bar(3_000_000, 2_000_000).endswith("     3MB")  # wonky total: no "/total"
    assert progress.progress_bar(1500, 0) == "   1.5kB"  # %8v


def test_pull_reporter_sequence_for_a_downloaded_layer() -> None:
    clock = [0.0]
    reporter = progress.PullReporter(clock=lambda: clock[0], interval=0.1)
    out = []
    for e in (ev("waiting"), ev("downloading", 10), ev("downloading", 20), ev("downloading", 100),
              ev("downloaded", 100), ev("extracting", 0), ev("extracted", 100)):
        out += reporter.translate(e)
    statuses = [m["status"] for m in out]
    # the 20-byte update came within the throttle interval; the final count always passes
    assert statuses == ["Pulling fs layer", "Downloading", "Downloading", "Verifying Checksum",
                        "Download complete", "Extracting", "Extracting", "Pull complete"]
    assert {m["id"] for m in out} == {"abababababab"}
    downloading = out[1]
    assert downloading["progressDetail"] == {"current": 10, "total": 100}
    assert downloading["progress"].startswith("[=====>")
    assert out[0]["progressDetail"] == {}


def test_pull_reporter_existing_layer_and_non_layers() -> None:
    reporter = progress.PullReporter()
    assert reporter.translate(ev("downloading", 5, digest=CONFIG, media_type=media.OCI_CONFIG)) == []
    assert reporter.translate(ev("resolved", media_type=media.OCI_INDEX)) == []
    assert reporter.translate(ev("waiting")) == []
    assert [m["status"] for m in reporter.translate(ev("exists", 100))] == ["Already exists"]
    # unpacking a layer that was there before is a no-op, and Docker shows nothing for it
    assert reporter.translate(ev("extracting")) == []
    assert reporter.translate(ev("extracted", 100)) == []


def test_push_reporter() -> None:
    reporter = progress.PushReporter(clock=lambda: 0.0)
    assert [m["status"] for m in reporter.translate(ev("exists", 100))] == ["Layer already exists"]
    pushing = reporter.translate(ev("uploading", 50))
    assert pushing[0]["status"] == "Pushing" and pushing[0]["progressDetail"] == {"current": 50, "total": 100}
    assert reporter.translate(ev("uploading", 60)) == []  # throttled (same clock instant)
    assert [m["status"] for m in reporter.translate(ev("pushed", 100))] == ["Pushed"]
    assert reporter.translate(ev("pushed", digest=CONFIG, media_type=media.OCI_CONFIG)) == []


async def _serve(operation: Callable[[Callable[[Progress], None]], object]) -> tuple[int, str]:
    async def handler(request: web.Request) -> web.StreamResponse:
        stream = progress.JSONStream(request)
        try:
            result = await progress.run_reporting(stream, operation,  # type: ignore[arg-type]
                                                  progress.PullReporter(clock=lambda: 0.0).translate)
        except Exception as exc:
            return await stream.fail(exc)
        await stream.send(progress.status(f"done {result}"))
        return await stream.finish()

    async def errors_to_json(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except errors.NarwhalError as exc:
            return web.json_response({"message": exc.message}, status=404)

    app = web.Application()
    app.router.add_post("/x", errors_to_json)
    async with TestClient(TestServer(app)) as client:
        resp = await client.post("/x")
        return resp.status, await resp.text()


async def test_failure_before_any_message_is_an_http_error() -> None:
    async def operation(sink: Callable[[Progress], None]) -> str:
        raise errors.NotFound("manifest unknown")

    status, body = await _serve(operation)
    assert status == 404
    assert json.loads(body) == {"message": "manifest unknown"}


async def test_failure_after_progress_goes_in_stream() -> None:
    async def operation(sink: Callable[[Progress], None]) -> str:
        sink(ev("waiting"))
        sink(ev("downloading", 10))
        await asyncio.sleep(0.01)
        raise errors.Unavailable("registry went away")

    status, body = await _serve(operation)
    assert status == 200
    lines = [json.loads(line) for line in body.split("\r\n") if line]
    assert lines[0]["status"] == "Pulling fs layer"
    assert lines[-1] == {"errorDetail": {"message": "registry went away"}, "error": "registry went away"}


async def test_success_streams_every_message_then_the_result() -> None:
    async def operation(sink: Callable[[Progress], None]) -> str:
        sink(ev("waiting"))
        sink(ev("downloading", 100))  # emitted synchronously before returning: still delivered
        return "ok"

    status, body = await _serve(operation)
    lines = [json.loads(line) for line in body.split("\r\n") if line]
    assert status == 200
    assert [m["status"] for m in lines] == ["Pulling fs layer", "Downloading", "done ok"]
    assert lines[1]["progressDetail"] == {"current": 100, "total": 100}
