"""Narrow interfaces the Docker handlers need from pkg (moby's backend.go)."""
from __future__ import annotations

from typing import Protocol

from pkg.system import VersionInfo


class SystemBackend(Protocol):
    async def version(self) -> VersionInfo: ...
