"""What a build is asked to do (the /build query, typed) and how it reports (the output sink)."""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pkg import errors
from pkg.docker.engine.model import Resources, Ulimit
from pkg.images.model import RegistryAuth

# moby's predefined build args: usable without an ARG, never kept in the image.
PREDEFINED_ARGS = frozenset({"HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy",
                             "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"})


@dataclass(frozen=True)
class BuildOptions:
    tags: list[str] = field(default_factory=list)  # normalised references
    dockerfile: str = ""
    target: str = ""
    build_args: dict[str, str | None] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    cache_from: list[str] = field(default_factory=list)
    no_cache: bool = False
    remove: bool = True  # rm: intermediate containers after a successful build
    force_remove: bool = False  # forcerm: always
    pull: bool = False
    quiet: bool = False
    platform: str = ""
    network_mode: str = ""
    extra_hosts: list[str] = field(default_factory=list)
    shm_size: int = 0
    resources: Resources = field(default_factory=Resources)
    ulimits: list[Ulimit] = field(default_factory=list)
    security_opt: list[str] = field(default_factory=list)
    auth: dict[str, RegistryAuth] = field(default_factory=dict)  # X-Registry-Config: registry -> credentials


class BuildFailed(errors.NarwhalError):
    """A step failed: reported in the stream as ``errorDetail`` (``code``: the RUN's exit status)."""

    kind = "failed"

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


Emit = Callable[[dict[str, Any]], Awaitable[None]]
