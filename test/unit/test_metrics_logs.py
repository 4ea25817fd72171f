"""Structured logs (text, JSON, request ids), runtime level changes and the SIGHUP reload."""
from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from narwhal.main import reloader
from narwhal.reload import reload
from pkg import errors, logsetup
from pkg.config import Config
from pkg.events import DockerEvent, EventBus


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    root = logging.getLogger()
    saved_level, saved_handlers = root.level, list(root.handlers)
    yield out
    for handler in list(root.handlers):
        if handler not in saved_handlers:
            root.removeHandler(handler)
    root.setLevel(saved_level)


def test_json_lines_carry_the_request_id_and_extras(stream: io.StringIO) -> None:
    logsetup.setup("info", "json", stream)
    log = logging.getLogger("narwhal.test")
    with logsetup.request_scope("abc123"):
        log.info("pulled %s", "busybox", extra={"bytes": 42})
    log.info("outside")
    inside, outside = (json.loads(line) for line in stream.getvalue().splitlines())
    assert inside["msg"] == "pulled busybox" and inside["request_id"] == "abc123" and inside["bytes"] == 42
    assert inside["level"] == "info" and inside["logger"] == "narwhal.test" and inside["time"].endswith("Z")
    assert "request_id" not in outside


def test_text_lines_show_the_request_id_and_tracebacks(stream: io.StringIO) -> None:
    logsetup.setup("info", "text", stream)
    with logsetup.request_scope() as rid:
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("narwhal.x").exception("failed")
    text = stream.getvalue()
    assert f"ERROR narwhal.x [req={rid}]: failed" in text and "ValueError: boom" in text


def test_level_changes_at_runtime_and_bad_values_are_refused(stream: io.StringIO) -> None:
    logsetup.setup("info", "text", stream)
    log = logging.getLogger("narwhal.y")
    log.debug("hidden")
    logsetup.set_level("debug")
    log.debug("shown")
    assert "hidden" not in stream.getvalue() and "shown" in stream.getvalue()
    with pytest.raises(errors.InvalidArgument):
        logsetup.set_level("verbose")
    with pytest.raises(errors.InvalidArgument):
        logsetup.setup("info", "xml", stream)


def test_sighup_reload_applies_log_keys_and_defers_the_rest(tmp_path: Path, stream: io.StringIO) -> None:
    logsetup.setup("info", "text", stream)
    config = tmp_path / "narwhal.yaml"
    config.write_text("log-level: info\n")
    load = reloader(["--config", str(config), "--root", str(tmp_path / "root")])
    current = load()
    bus = EventBus()

    config.write_text("log-level: debug\nlog-format: json\nmax-concurrent-downloads: 5\n")
    current = reload(current, load, bus)
    assert (current.log_level, current.log_format, current.max_concurrent_downloads) == ("debug", "json", 3)
    assert logging.getLogger().level == logging.DEBUG
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]
    assert any("max-concurrent-downloads changed; restart" in line["msg"] for line in lines)
    (event,) = bus.history(lambda e: isinstance(e, DockerEvent))
    assert (event.type, event.action, event.attributes["log-level"]) == ("daemon", "reload", "debug")

    config.write_text("log-level: loud\n")
    assert reload(current, load, bus) is current  # refused as a whole
    assert "reload refused: log-level" in stream.getvalue()


def test_flags_still_win_over_the_reloaded_file(tmp_path: Path) -> None:
    config = tmp_path / "narwhal.yaml"
    config.write_text("log-level: info\n")
    load = reloader(["--config", str(config), "--log-level", "warning"])
    config.write_text("log-level: debug\n")
    assert reload(Config(log_level="warning"), load).log_level == "warning"


def test_logger_reports_bytes_and_records_written(tmp_path: Path) -> None:
    from pkg.logs.writer import LogWriter, Stream, read_stats_file

    log, stats = tmp_path / "c.log", tmp_path / "logger.pid.stats"
    writer = LogWriter(str(log), max_line=8, stats_path=str(stats))
    out = Stream(1, b"stdout")
    writer.feed(out, b"one\ntwo\n")  # two F records
    writer.feed(out, b"0123456789ab\n")  # longer than max-line: a P record and an F record
    writer.feed(out, b"tail", final=True)  # an unterminated line: one P record
    writer.close()
    assert read_stats_file(str(stats)) == (log.stat().st_size, 5)
    assert len(log.read_text().splitlines()) == 5
