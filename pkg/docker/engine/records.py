"""Engine records on disk: one JSON file per Docker container, replaced atomically.

A record is written only once its core sandbox and container exist, and it is
marked REMOVING before removal starts; recovery (pkg.docker.engine.recover) treats
Docker-domain objects without a record as the leftovers of a create that was
cut short, and finishes removals it finds marked.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path

from pkg.aio import rmtree
from pkg.docker.engine.model import EngineRecord
from pkg.model.codec import from_dict, to_dict

log = logging.getLogger(__name__)

RECORD = "record.json"


class RecordStore:
    def __init__(self, root: Path) -> None:
        self.root = root  # <docker root>/engine: one directory per container (record + log)

    def dir(self, container_id: str) -> Path:
        return self.root / container_id

    async def write(self, record: EngineRecord) -> None:
        await asyncio.to_thread(_write_atomic, self.dir(record.id) / RECORD, json.dumps(to_dict(record)))

    async def delete(self, container_id: str) -> None:
        await rmtree(self.dir(container_id))

    async def load_all(self) -> tuple[list[EngineRecord], list[str]]:
        """Every readable record, and the IDs of directories without one (to clean up)."""
        return await asyncio.to_thread(self._load_all)

    def _load_all(self) -> tuple[list[EngineRecord], list[str]]:
        records: list[EngineRecord] = []
        broken: list[str] = []
        if not self.root.exists():
            return records, broken
        for entry in sorted(self.root.iterdir()):
            path = entry / RECORD
            try:
                records.append(from_dict(EngineRecord, json.loads(path.read_text())))
            except FileNotFoundError:
                broken.append(entry.name)
            except (OSError, ValueError, TypeError, KeyError) as exc:
                log.error("engine record %s is unreadable (%s): dropping the container", path, exc)
                broken.append(entry.name)
        return records, broken


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
