"""The attachment cache: what was (or is being) attached for each sandbox.

Like libcni's result cache, DEL and CHECK read the cached result and pass it
as prevResult, with the network config and capability args *as they were at
ADD time* (the conf dir may have changed since).  Unlike libcni, the record is
written before ADD runs (``result`` still null): a daemon killed mid-ADD
leaves a record that tells the next start's GC exactly what to DEL.  Records
live under this instance's state dir only.

A sandbox has one record per interface: ``<sandbox id>.json`` for eth0 (the
only one CRI pods ever have) and ``<sandbox id>+<ifname>.json`` for the
further networks a Docker container joins.

Reads of a sandbox's records (``all``: every inspect of a Docker container asks) are served from memory
once read, until this cache writes or deletes any record: narwhald is the only writer of its state dir
while it runs, so the files cannot change under it.
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
PRIMARY_IFNAME = "eth0"
_SEP = "+"  # never in a sandbox id (see manager._SANDBOX_ID)


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
    network: str = ""  # the network as the caller named it (Docker's name; "" = the default network)
    aliases: tuple[str, ...] = ()  # DNS names on that network besides the container's own
    links: tuple[str, ...] = ()  # Docker's endpoint Links ("name:alias"), resolved by this sandbox only
    # Plugin types of the network's own chain ADD left out as no-ops for this request (pkg/cni/noop.py): not
    # in ``config`` either, so DEL and CHECK skip them too.  Informational; older records have none.
    skipped: tuple[str, ...] = ()

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
            "network": self.network,
            "aliases": list(self.aliases),
            "links": list(self.links),
            "skipped": list(self.skipped),
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
            network=str(data.get("network") or ""),
            aliases=tuple(str(a) for a in data.get("aliases") or ()),
            links=tuple(str(a) for a in data.get("links") or ()),
            skipped=tuple(str(a) for a in data.get("skipped") or ()),
        )


def _stem(sandbox_id: str, ifname: str) -> str:
    return sandbox_id if ifname == PRIMARY_IFNAME else f"{sandbox_id}{_SEP}{ifname}"


class AttachmentCache:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._known: dict[str, list[Attachment]] = {}  # sandbox -> its records as last read
        self._generation = 0  # bumped by every write or delete: a read begun before one is not kept

    def path(self, sandbox_id: str, ifname: str = PRIMARY_IFNAME) -> Path:
        return self.directory / f"{_stem(sandbox_id, ifname)}.json"

    def _write(self, att: Attachment) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.path(att.sandbox_id, att.ifname)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump(att.to_json(), f)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)

    def _read(self, sandbox_id: str, ifname: str) -> Attachment | None:
        path = self.path(sandbox_id, ifname)
        try:
            return Attachment.from_json(json.loads(path.read_bytes()))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            # A torn or foreign file: nothing we can DEL with; GC removes it.
            log.warning("ignoring unreadable CNI cache record %s: %s", path, exc)
            return None

    def _changed(self) -> None:
        self._generation += 1
        self._known.clear()

    async def put(self, att: Attachment) -> None:
        self._changed()
        try:
            await asyncio.to_thread(self._write, att)
        finally:
            self._changed()

    async def get(self, sandbox_id: str, ifname: str = PRIMARY_IFNAME) -> Attachment | None:
        return await asyncio.to_thread(self._read, sandbox_id, ifname)

    def _ifnames(self, sandbox_id: str) -> list[str]:
        names: set[str] = set()
        for stem in self._stems():
            sid, _, ifname = stem.partition(_SEP)
            if sid == sandbox_id:
                names.add(ifname or PRIMARY_IFNAME)
        return sorted(names, key=_ifname_order)

    def _all(self, sandbox_id: str) -> list[Attachment]:
        found = []
        for ifname in self._ifnames(sandbox_id):
            att = self._read(sandbox_id, ifname)
            if att is not None:
                found.append(att)
        return found

    async def ifnames(self, sandbox_id: str) -> list[str]:
        """Every interface with a record (complete, in flight or unreadable), eth0 first."""
        return await asyncio.to_thread(self._ifnames, sandbox_id)

    async def all(self, sandbox_id: str) -> list[Attachment]:
        """The sandbox's readable records, eth0 first."""
        known = self._known.get(sandbox_id)
        if known is not None:
            return list(known)
        generation = self._generation
        found = await asyncio.to_thread(self._all, sandbox_id)
        if generation == self._generation:
            self._known[sandbox_id] = list(found)
        return found

    def _delete(self, sandbox_id: str, ifname: str) -> None:
        path = self.path(sandbox_id, ifname)
        path.unlink(missing_ok=True)
        path.with_suffix(".tmp").unlink(missing_ok=True)

    async def delete(self, sandbox_id: str, ifname: str = PRIMARY_IFNAME) -> None:
        self._changed()
        try:
            await asyncio.to_thread(self._delete, sandbox_id, ifname)
        finally:
            self._changed()

    def _stems(self) -> set[str]:
        try:
            return {p.stem for p in self.directory.iterdir() if p.suffix in (".json", ".tmp")}
        except FileNotFoundError:
            return set()

    def _ids(self) -> list[str]:
        return sorted({stem.partition(_SEP)[0] for stem in self._stems()})

    async def ids(self) -> list[str]:
        """Sandboxes with at least one record."""
        return await asyncio.to_thread(self._ids)

    def _mtime(self, sandbox_id: str) -> float | None:
        """The newest change to any of the sandbox's records (GC spares fresh ones)."""
        newest: float | None = None
        for ifname in self._ifnames(sandbox_id):
            path = self.path(sandbox_id, ifname)
            for candidate in (path, path.with_suffix(".tmp")):
                try:
                    mtime = candidate.lstat().st_mtime
                except OSError:
                    continue
                newest = mtime if newest is None else max(newest, mtime)
        return newest

    async def mtime(self, sandbox_id: str) -> float | None:
        return await asyncio.to_thread(self._mtime, sandbox_id)


def _ifname_order(ifname: str) -> tuple[int, str]:
    """eth2 before eth10."""
    digits = ifname.lstrip("abcdefghijklmnopqrstuvwxyz")
    return (int(digits), ifname) if (digits.isascii() and digits.isdigit()) else (1 << 30, ifname)
