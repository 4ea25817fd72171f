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


async def test_a_line_without_end_is_handed_out_in_bounded_pieces(tmp_path: Path) -> None:
    """A container printing megabytes without a newline: never one joined entry (moby's 16 KiB chunks)."""
    log = tmp_path / "0.log"
    piece = b"x" * 16384
    records = [encode_line(i, "stdout", piece, partial=True) for i in range(256)]  # 4 MiB on one line
    log.write_bytes(b"".join(records) + encode_line(999, "stdout", b"end"))
    entries = await _entries(log, ReadOptions())
    assert b"".join(content for _, content, _ in entries) == piece * 256 + b"end\n"
    assert max(len(content) for _, content, _ in entries) <= 2 * 16384
    assert all(partial for _, _, partial in entries[:-1]) and not entries[-1][2]
