"""Loading CNI network configurations from the conf dir (libcni's rules).

Files ending in .conflist, .conf or .json are read in lexical order; the
first valid one is the default network.  A single-plugin .conf is wrapped
into a conflist, as libcni does.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pkg import errors

EXTENSIONS = (".conflist", ".conf", ".json")


@dataclass(frozen=True)
class NetworkConfigList:
    name: str
    cni_version: str
    plugins: list[dict[str, Any]]
    path: Path
    raw: dict[str, Any] = field(repr=False, default_factory=dict)
    # Narwhal built this list itself (its default network, a Docker network): plugins that would do nothing
    # for a request are left out of its ADD (pkg/cni/noop.py).  False for every list an administrator provides.
    generated: bool = False


def parse(path: Path) -> NetworkConfigList:
    """Parse one file; raise InvalidArgument with the reason when it is not usable."""
    try:
        data = json.loads(path.read_bytes())
    except OSError as exc:
        raise errors.InvalidArgument(f"{path}: {exc.strerror}") from None
    except ValueError as exc:
        raise errors.InvalidArgument(f"{path}: invalid JSON: {exc}") from None
    return from_dict(data, path)


def from_dict(data: Any, path: Path) -> NetworkConfigList:
    """Validate decoded JSON (a file's, or a cached copy's) as a network config list."""
    if not isinstance(data, dict):
        raise errors.InvalidArgument(f"{path}: expected a JSON object")
    if path.suffix != ".conflist" and "plugins" not in data:
        if not data.get("type"):
            raise errors.InvalidArgument(f"{path}: network config has no 'type'")
        data = {"cniVersion": data.get("cniVersion", ""), "name": data.get("name", ""), "plugins": [data]}
    name, plugins = data.get("name"), data.get("plugins")
    if not isinstance(name, str) or not name:
        raise errors.InvalidArgument(f"{path}: network config has no 'name'")
    if not isinstance(plugins, list) or not plugins:
        raise errors.InvalidArgument(f"{path}: network config list has no 'plugins'")
    for i, plugin in enumerate(plugins):
        if not isinstance(plugin, dict) or not isinstance(plugin.get("type"), str) or not plugin["type"]:
            raise errors.InvalidArgument(f"{path}: plugin {i} has no 'type'")
    version = data.get("cniVersion", "")
    return NetworkConfigList(name=name, cni_version=str(version), plugins=plugins, path=path, raw=data)


def load_default(conf_dir: Path) -> NetworkConfigList:
    """The first valid network in ``conf_dir``; NotFound/InvalidArgument say why there is none."""
    try:
        files = sorted(p for p in conf_dir.iterdir() if p.suffix in EXTENSIONS and p.is_file())
    except FileNotFoundError:
        raise errors.NotFound(f"no network config found in {conf_dir}") from None
    if not files:
        raise errors.NotFound(f"no network config found in {conf_dir}")
    problems = []
    for path in files:
        try:
            return parse(path)
        except errors.InvalidArgument as exc:
            problems.append(exc.message)
    raise errors.InvalidArgument("no valid network config: " + "; ".join(problems))
