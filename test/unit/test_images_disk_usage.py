"""pkg.images.disk_usage: ImageFsInfo's walk (each inode once) and the cache the image service keeps of it."""
from __future__ import annotations

import os
from pathlib import Path

from pkg.images.disk_usage import UsageCache, usage


def test_a_hard_link_counts_once(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_bytes(b"x" * 8192)
    os.link(tmp_path / "d" / "f", tmp_path / "g")
    (tmp_path / "s").symlink_to("d/f")
    got = usage(tmp_path)
    assert got.mountpoint == str(tmp_path)
    assert got.inodes_used == 3  # d, f (= g), s
    assert got.used_bytes >= 8192


async def test_the_cache_serves_until_invalidated_or_stale(tmp_path: Path) -> None:
    cache = UsageCache()
    first = await cache.get([tmp_path])
    (tmp_path / "new").write_text("x")
    assert await cache.get([tmp_path]) is first  # within the TTL
    cache.invalidate()
    assert (await cache.get([tmp_path]))[0].inodes_used == first[0].inodes_used + 1
    stale = UsageCache(ttl=0.0)
    one = await stale.get([tmp_path])
    assert await stale.get([tmp_path]) is not one
