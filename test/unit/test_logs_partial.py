"""Unterminated output: the reader can hand out P records as they come (what Attach follows)."""
from pathlib import Path

from pkg.logs.criformat import encode_line
from pkg.logs.reader import ReadOptions, read_log


async def _entries(path: Path, options: ReadOptions) -> list[tuple[str, bytes, bool]]:
    return [(e.stream, e.content, e.partial) async for e in read_log(path, options)]


async def test_partial_records_joined_or_raw(tmp_path: Path) -> None:
    log = tmp_path / "0.log"
    log.write_bytes(
        encode_line(1, "stdout", b"/ # ", partial=True)
        + encode_line(2, "stderr", b"warn")
        + encode_line(3, "stdout", b"ls")
    )
    assert await _entries(log, ReadOptions()) == [("stderr", b"warn\n", False), ("stdout", b"/ # ls\n", False)]
    assert await _entries(log, ReadOptions(join_partial=False)) == [
        ("stdout", b"/ # ", True), ("stderr", b"warn\n", False), ("stdout", b"ls\n", False)]
