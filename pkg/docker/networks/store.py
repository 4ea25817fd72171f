"""Network records on disk: one JSON file per network under the Docker root, written atomically."""
from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path

from pkg.docker.networks.model import Network

log = logging.getLogger(__name__)


class NetworkFiles:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _write(self, network: Network) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.directory / f"{network.id}.json"
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump(network.to_json(), f)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)

    def _load(self) -> list[Network]:
        found = []
        try:
            paths = sorted(self.directory.glob("*.json"))
        except FileNotFoundError:
            return []
        for path in paths:
            try:
                found.append(Network.from_json(json.loads(path.read_bytes())))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("ignoring unreadable network record %s: %s", path, exc)
        return found

    async def put(self, network: Network) -> None:
        await asyncio.to_thread(self._write, network)

    async def delete(self, network_id: str) -> None:
        await asyncio.to_thread((self.directory / f"{network_id}.json").unlink, True)

    async def load(self) -> list[Network]:
        return await asyncio.to_thread(self._load)
