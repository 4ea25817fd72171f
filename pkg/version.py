"""Narwhal's own version facts, shared by the CRI Version RPC and the Docker /version."""
from __future__ import annotations

import functools
import os
import platform
import sys

RUNTIME_NAME = "narwhal"
CRI_API_VERSION = "v1"
_UNKNOWN = "0.0.0-dev"


@functools.cache
def narwhal_version() -> str:
    """The installed package's version, read once: every Docker API response names it (its Server header).

    Found as importlib.metadata finds it (the first ``narwhal-*.dist-info`` or ``.egg-info`` on sys.path, its
    ``Version:`` header) without importing importlib.metadata: that pulls in email, zipfile and csv, ~1.6 MiB
    of an idle narwhald that asks it one thing once (docs/benchmarks.md, "Idle RSS, and containerd's plugins";
    test/unit/test_promclient.py checks both answer the same)."""
    for entry in sys.path:
        try:
            names = sorted(os.listdir(entry or "."))
        except OSError:
            continue
        for name in names:
            dist, _, kind = name.rpartition(".")
            if kind not in ("dist-info", "egg-info") or dist.partition("-")[0].lower() != RUNTIME_NAME:
                continue
            meta = "METADATA" if kind == "dist-info" else "PKG-INFO"
            version = _version_header(os.path.join(entry or ".", name, meta))
            if version is not None:
                return version
    return _UNKNOWN


def _version_header(path: str) -> str | None:
    """The ``Version:`` header of a core-metadata file (RFC 822 style: headers end at the first empty line)."""
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    return None
                key, sep, value = line.partition(":")
                if sep and key.strip().lower() == "version":
                    return value.strip()
    except OSError:
        return None
    return None


def python_version() -> str:
    return f"python{platform.python_version()}"
