"""Facts about this engine and host, for Docker's /version and /info and CRI verbose status."""
from __future__ import annotations

import asyncio
import os
import platform
from dataclasses import dataclass, field

from pkg import errors
from pkg.containerd.client import Client
from pkg.version import narwhal_version, python_version


@dataclass(frozen=True)
class Component:
    name: str
    version: str
    details: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class VersionInfo:
    version: str
    python: str
    os: str
    arch: str
    kernel: str
    components: list[Component]


_GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x"}


def goarch() -> str:
    machine = platform.machine()
    return _GOARCH.get(machine, machine)


class SystemService:
    def __init__(self, client: Client) -> None:
        self._client = client
        self._runc: str | None = None

    async def _runc_version(self) -> str:
        if self._runc is None:
            try:
                proc = await asyncio.create_subprocess_exec(
                    "runc", "--version", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
                )
                out, _ = await asyncio.wait_for(proc.communicate(), 5)
                first = out.decode(errors="replace").splitlines()[0] if out else ""
                self._runc = first.removeprefix("runc version ").strip() or "unknown"
            except (TimeoutError, OSError):
                self._runc = "unknown"
        return self._runc

    async def version(self) -> VersionInfo:
        try:
            ctr_version, ctr_revision = await self._client.version()
        except errors.NarwhalError:
            ctr_version, ctr_revision = "unavailable", ""
        engine = narwhal_version()
        return VersionInfo(
            version=engine,
            python=python_version(),
            os="linux",
            arch=goarch(),
            kernel=os.uname().release,
            components=[
                Component("Engine", engine, {"ApiVersion": "", "Os": "linux", "Arch": goarch()}),
                Component("containerd", ctr_version, {"GitCommit": ctr_revision}),
                Component("runc", await self._runc_version()),
            ],
        )
