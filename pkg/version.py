"""Narwhal's own version facts, shared by the CRI Version RPC and the Docker /version."""
from __future__ import annotations

import functools
import platform
from importlib import metadata

RUNTIME_NAME = "narwhal"
CRI_API_VERSION = "v1"


@functools.cache
def narwhal_version() -> str:
    """The installed package's version, read once: every Docker API response names it (its Server header), and
    importlib.metadata reads and parses the package's METADATA file at each call (a third of docker ps's CPU
    in narwhald and half of a docker exec's request handling under py-spy, issue 21)."""
    try:
        return metadata.version("narwhal")
    except metadata.PackageNotFoundError:
        return "0.0.0-dev"


def python_version() -> str:
    return f"python{platform.python_version()}"
