"""Running a network config list (a chain of plugins) as libcni does.

ADD runs the plugins in order, each receiving the previous one's result as
``prevResult``; DEL runs them in reverse with the cached result; CHECK in
order.  Each plugin gets only the capability args (``runtimeConfig``) it
declares in ``capabilities``.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pkg import errors
from pkg.cni import exec as cni_exec
from pkg.cni.config import NetworkConfigList

log = logging.getLogger(__name__)

VERSION_TIMEOUT = 10.0


def version_tuple(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in (version or "0.1.0").split("."))
    except ValueError:
        return (0,)


@dataclass(frozen=True)
class Runner:
    """Where plugins live and how long each call may take."""

    bin_dirs: list[Path]
    timeout: float

    def stdin(
        self, net: NetworkConfigList, plugin: dict[str, Any], prev_result: dict[str, Any] | None,
        runtime_config: dict[str, Any],
    ) -> dict[str, Any]:
        conf = copy.deepcopy(plugin)
        conf["name"] = net.name
        conf["cniVersion"] = net.cni_version
        if prev_result is not None:
            conf["prevResult"] = prev_result
        caps = plugin.get("capabilities")
        if isinstance(caps, dict):
            wanted = {k: v for k, v in runtime_config.items() if caps.get(k) is True}
            if wanted:
                conf["runtimeConfig"] = {**(conf.get("runtimeConfig") or {}), **wanted}
        return conf

    async def _call(
        self, net: NetworkConfigList, plugin: dict[str, Any], inv: cni_exec.Invocation,
        prev_result: dict[str, Any] | None, runtime_config: dict[str, Any],
    ) -> dict[str, Any] | None:
        binary = cni_exec.find_plugin(str(plugin.get("type", "")), self.bin_dirs)
        stdin = self.stdin(net, plugin, prev_result, runtime_config)
        return await cni_exec.invoke(binary, inv, stdin, self.bin_dirs, self.timeout)

    async def add(
        self, net: NetworkConfigList, inv: cni_exec.Invocation, runtime_config: dict[str, Any],
        progress: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """ADD through the chain; the last plugin's result.  ``progress`` collects each result
        so a caller rolling back a failed ADD can pass the furthest one to DEL."""
        result: dict[str, Any] | None = None
        for plugin in net.plugins:
            out = await self._call(net, plugin, inv, result, runtime_config)
            if out is None:
                raise errors.Internal(f"CNI plugin {plugin.get('type')} ADD printed no result")
            result = out
            if progress is not None:
                progress.append(out)
        assert result is not None  # a conflist has at least one plugin (config.parse)
        return result

    async def delete(
        self, net: NetworkConfigList, inv: cni_exec.Invocation, runtime_config: dict[str, Any],
        prev_result: dict[str, Any] | None,
    ) -> None:
        """DEL through the chain in reverse.  Every plugin gets its chance to release what it
        holds even when an earlier one fails; the first failure is raised at the end."""
        prev = prev_result if version_tuple(net.cni_version) >= (0, 4, 0) else None
        first: errors.NarwhalError | None = None
        for plugin in reversed(net.plugins):
            try:
                await self._call(net, plugin, inv, prev, runtime_config)
            except errors.NarwhalError as exc:
                log.warning("CNI DEL of %s for %s: %s", plugin.get("type"), inv.container_id, exc.message)
                first = first or exc
        if first is not None:
            raise first

    async def check(
        self, net: NetworkConfigList, inv: cni_exec.Invocation, runtime_config: dict[str, Any],
        prev_result: dict[str, Any] | None,
    ) -> None:
        if version_tuple(net.cni_version) < (0, 4, 0):
            raise errors.FailedPrecondition(
                f"network {net.name!r} uses CNI version {net.cni_version or '0.1.0'}, which has no CHECK"
            )
        if net.raw.get("disableCheck") is True:
            return
        for plugin in net.plugins:
            await self._call(net, plugin, inv, prev_result, runtime_config)

    async def supported_versions(self, plugin_type: str) -> list[str]:
        """The plugin's VERSION answer: the CNI versions it speaks."""
        binary = cni_exec.find_plugin(plugin_type, self.bin_dirs)
        # Short: it runs under the config reload, which status() and setup() wait for.
        out = await cni_exec.invoke(
            binary, cni_exec.Invocation("VERSION"), {"cniVersion": "1.0.0"}, self.bin_dirs,
            min(self.timeout, VERSION_TIMEOUT),
        )
        versions = (out or {}).get("supportedVersions")
        if not isinstance(versions, list):
            raise errors.FailedPrecondition(f"CNI plugin {plugin_type} answered VERSION without supportedVersions")
        return [str(v) for v in versions]

    async def validate(self, net: NetworkConfigList) -> None:
        """Every plugin is installed and speaks the list's cniVersion (libcni ValidateNetworkList)."""
        version = net.cni_version or "0.1.0"
        for plugin in net.plugins:
            plugin_type = str(plugin["type"])
            supported = await self.supported_versions(plugin_type)
            if version not in supported:
                raise errors.FailedPrecondition(
                    f"{net.path}: CNI plugin {plugin_type} does not support cniVersion {version!r} "
                    f"(supports {', '.join(supported)})"
                )
            ipam = plugin.get("ipam")
            if isinstance(ipam, dict) and ipam.get("type"):
                cni_exec.find_plugin(str(ipam["type"]), self.bin_dirs)
