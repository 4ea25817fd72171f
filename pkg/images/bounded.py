"""Reading what a registry (or token server) sends, with a ceiling: no response body is ever held whole
without a cap, so an endless body or a decompression bomb costs at most the cap.  Sessions are created with
``auto_decompress=False`` and ``Accept-Encoding: identity``: bytes are counted as they arrive on the wire.
"""
from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from pkg import errors

if TYPE_CHECKING:  # annotations only: pkg.images.service imports this without the HTTP client
    import aiohttp

MAX_ERROR_BODY = 64 << 10  # what an error message may take (the rest is dropped with the connection)
MAX_TOKEN_BODY = 1 << 20  # a token server's JSON answer
# Sent with every registry request: a compressed answer would be hashed and sized as the wire bytes anyway.
IDENTITY = {"Accept-Encoding": "identity"}


async def read_head(resp: aiohttp.ClientResponse, limit: int = MAX_ERROR_BODY) -> bytes:
    """Up to ``limit`` bytes of the body; the rest is never read (releasing the response then closes it).

    What was read is kept as the response's body (aiohttp's own cache), so a second read of an error
    response (a challenge answered in vain) still has the registry's message.
    """
    cached: bytes | None = getattr(resp, "_body", None)
    if cached is not None:
        return cached[:limit]
    out = bytearray()
    while len(out) < limit:
        chunk = await resp.content.read(limit - len(out))
        if not chunk:
            break
        out += chunk
    resp._body = bytes(out)
    return resp._body


async def read_body(resp: aiohttp.ClientResponse, limit: int, what: str) -> bytes:
    """The whole body, refused (ResourceExhausted) once it passes ``limit`` bytes."""
    body = await read_head(resp, limit + 1)
    if len(body) > limit:
        raise errors.ResourceExhausted(f"{what}: the response is larger than {limit} bytes")
    return body


async def join_chunks(chunks: AsyncIterator[bytes], limit: int, what: str) -> bytes:
    """A streamed body joined in memory, refused once it passes ``limit`` bytes."""
    out = bytearray()
    async for chunk in chunks:
        out += chunk
        if len(out) > limit:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()
            raise errors.InvalidArgument(f"{what}: the registry sent more than {limit} bytes")
    return bytes(out)
