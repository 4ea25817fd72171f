"""Narwhal's own version facts, shared by the CRI Version RPC and the Docker /version."""
from __future__ import annotations

import platform
from importlib import metadata

RUNTIME_NAME = "narwhal"
CRI_API_VERSION = "v1"


def narwhal_version() -> str:
    try:
        return metadata.version("narwhal")
    except metadata.PackageNotFoundError:
        return "0.0.0-dev"


def python_version() -> str:
    return f"python{platform.python_version()}"
