"""ADD <url>: the file downloaded into the build's scratch space, named as moby names it (the URL path's last
element), mode 0600, its time from Last-Modified; its content checksum is what the cache key sees."""
from __future__ import annotations

import asyncio
import email.utils
import os
import posixpath
import urllib.parse
from pathlib import Path

import aiohttp

from pkg import errors

CHUNK = 1 << 20


def file_name(url: str) -> str:
    path = urllib.parse.urlparse(url).path
    name = posixpath.basename(path.rstrip("/")) if path else ""
    return name or "__unnamed__"


async def download(url: str, directory: Path) -> Path:
    timeout = aiohttp.ClientTimeout(total=None, connect=30, sock_read=120)
    target = directory / file_name(url)
    try:
        async with aiohttp.ClientSession(timeout=timeout, trust_env=False) as session, session.get(url) as resp:
            if resp.status >= 400:
                raise errors.InvalidArgument(f"failed to GET {url} with status {resp.status} {resp.reason}")
            fobj = await asyncio.to_thread(open, target, "wb")
            try:
                async for chunk in resp.content.iter_chunked(CHUNK):
                    await asyncio.to_thread(fobj.write, chunk)
            finally:
                await asyncio.to_thread(fobj.close)
            modified = resp.headers.get("Last-Modified", "")
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise errors.InvalidArgument(f"failed to GET {url}: {exc or type(exc).__name__}") from None
    os.chmod(target, 0o600)
    if modified:
        try:
            stamp = email.utils.parsedate_to_datetime(modified).timestamp()
            os.utime(target, (stamp, stamp))
        except (TypeError, ValueError):
            pass
    return target
