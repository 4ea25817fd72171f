"""The attachment cache: what was (or is being) attached for each sandbox.

Like libcni's result cache, DEL and CHECK read the cached result and pass it
as prevResult, with the network config and capability args *as they were at
ADD time* (the conf dir may have changed since).  Unlike libcni, the record is
written before ADD runs (``result`` still null): a daemon killed mid-ADD
leaves a record that tells the next start's GC exactly what to DEL.  Records
live under this instance's state dir only.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


@dataclass(frozen=True)
class Attachment:
    sandbox_id: str
    network_name: str
    ifname: str
    netns: str
    cni_args: str
    config: dict[str, Any] = field(repr=False)  # the whole conflist as used for ADD
    runtime_config: dict[str, Any] = field(default_factory=dict)  # capability args
    result: dict[str, Any] | None = field(default=None, repr=False)  # null while ADD is in flight

    def to_json(self) -> dict[str, Any]:
        return {
            "version": FORMAT_VERSION,
            "sandboxId": self.sandbox_id,
            "networkName": self.network_name,
            "ifName": self.ifname,
            "netns": self.netns,
            "cniArgs": self.cni_args,
            "config": self.config,
            "runtimeConfig": self.runtime_config,
            "result": self.result,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Attachment:
        return cls(
            sandbox_id=str(data["sandboxId"]),
            network_name=str(data["networkName"]),
            ifname=str(data["ifName"]),
            netns=str(data.get("netns") or ""),
            cni_args=str(data.get("cniArgs") or ""),
            config=dict(data["config"]),
            runtime_config=dict(data.get("runtimeConfig") or {}),
            result=data.get("result"),
        )


class AttachmentCache:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, sandbox_id: str) -> Path:
        return self.directory / f"{sandbox_id}.json"

    def _write(self, att: Attachment) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self._path(att.sandbox_id)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump(att.to_json(), f)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)

    def _read(self, sandbox_id: str) -> Attachment | None:
        path = self._path(sandbox_id)
        try:
            return Attachment.from_json(json.loads(path.read_bytes()))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            # A torn or foreign file: nothing we can DEL with; GC removes it.
            log.warning("ignoring unreadable CNI cache record %s: %s", path, exc)
            return None

    async def put(self, att: Attachment) -> None:
        await asyncio.to_thread(self._write, att)

    async def get(self, sandbox_id: str) -> Attachment | None:
        return await asyncio.to_thread(self._read, sandbox_id)

    def _delete(self, sandbox_id: str) -> None:
        path = self._path(sandbox_id)
        path.unlink(missing_ok=True)
        path.with_suffix(".tmp").unlink(missing_ok=True)

    async def delete(self, sandbox_id: str) -> None:
        await asyncio.to_thread(self._delete, sandbox_id)

    def _ids(self) -> list[str]:
        try:
            return sorted({p.stem for p in self.directory.iterdir() if p.suffix in (".json", ".tmp")})
        except FileNotFoundError:
            return []

    async def ids(self) -> list[str]:
        return await asyncio.to_thread(self._ids)
