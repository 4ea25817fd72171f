"""Status checkpoints: one small JSON file per object, replaced atomically.

Metadata lives in containerd (the container record's extension); the mutable
status lives here, under the persistent root, so a narwhald killed at any
moment finds each object's last committed state on restart.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TypeVar

from pkg.model.codec import from_dict, to_dict

T = TypeVar("T")
STATUS_FILE = "status.json"


def write(directory: Path, status: object) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{STATUS_FILE}.tmp"
    tmp.write_text(json.dumps(to_dict(status)))
    os.replace(tmp, directory / STATUS_FILE)


def read(directory: Path, cls: type[T]) -> T | None:
    try:
        return from_dict(cls, json.loads((directory / STATUS_FILE).read_text()))
    except (OSError, ValueError, TypeError, KeyError):
        return None
