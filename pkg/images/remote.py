"""What the image service asks a registry without touching the local store: tags, a manifest's platforms.

Separate from pkg.images.service because it is the registry side only: each call opens a RegistrySession
(mirrors, auth) and reads, nothing is pulled or written.  The registry client (and aiohttp) is imported at
the first such call, pull, push or login, never at start (idle RSS): ``registry_client()`` first.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from pkg import errors
from pkg.aio import import_modules
from pkg.config import Config
from pkg.images import bounded, media, reference
from pkg.images.model import Distribution, RegistryAuth

if TYPE_CHECKING:
    from pkg.images.registry import RegistrySession

_REGISTRY_CLIENT = ("pkg.images.registry", "pkg.images.pull", "pkg.images.push", "pkg.images.login")


async def registry_client() -> None:
    """The registry client (and aiohttp's) is imported at the first pull, push or login, not at start."""
    await import_modules(*_REGISTRY_CLIENT)


async def session(ref: reference.Reference, cfg: Config, auth: RegistryAuth | None, *, push: bool = False,
                  read_timeout: float | None = None) -> RegistrySession:
    await registry_client()
    from pkg.images.registry import RegistrySession

    return RegistrySession(ref, cfg.registry, auth, push=push, read_timeout=read_timeout)


async def list_tags(cfg: Config, repository: str, auth: RegistryAuth | None = None) -> list[str]:
    """The tags ``repository`` has in its registry (mirrors first), sorted."""
    parsed = reference.parse(repository, default_tag=False)
    if parsed.tag or parsed.digest:
        raise errors.InvalidArgument(f"{repository}: a repository name without a tag or digest is needed")
    async with await session(parsed, cfg, auth) as opened:
        return sorted(set(await opened.list_tags()))


async def distribution(cfg: Config, ref: str, auth: RegistryAuth | None = None) -> Distribution:
    """The registry's manifest (or index) for ``ref`` and its platforms, without pulling anything."""
    parsed = reference.parse(ref)
    async with await session(parsed, cfg, auth) as opened:
        ep, target, body = await opened.resolve()
        if target.media_type in media.INDEXES:
            platforms = [(e.os, e.architecture, e.variant) for e in media.parse_index(body)
                         if e.os or e.architecture]
        else:
            manifest = media.parse_manifest(body, target.media_type)
            if manifest.config.size > media.MAX_MANIFEST:
                raise errors.InvalidArgument(f"image config {manifest.config.digest} is too large")
            _, chunks = await opened.open_blob(ep, manifest.config.digest)
            data = await bounded.join_chunks(chunks, manifest.config.size, f"config {manifest.config.digest}")
            if media.sha256(data) != manifest.config.digest:
                raise errors.InvalidArgument(f"config {manifest.config.digest}: the registry served other bytes")
            config = media.parse_config(data)
            platforms = [(config.os, config.architecture, config.variant)]
    return Distribution(target, platforms)
