"""One Narwhal instance's pod networking as CNI integration tests see it: a NetworkManager with its
own dirs, helpers to make pods, and a probe listing everything a pod could leak."""
from __future__ import annotations

import json
from pathlib import Path

from lib.cni_host import (
    HostGuard,
    bridge_ports,
    container_chains,
    firewall_rules,
    mounted_under,
    tagged_rules,
)
from pkg.cni import defaults, netns
from pkg.cni.manager import NetworkManager
from pkg.cni.model import PodNetworkRequest
from pkg.config import Config, build


class Net:
    """One Narwhal instance's networking, with its own dirs, as a test sees it."""

    def __init__(self, base: Path, guard: HostGuard, **options: object) -> None:
        self.base = base
        self.cfg: Config = build({}, {
            "root": str(base / "root"), "state": str(base / "state"), "cni-conf-dir": str(base / "net.d"),
            **{k.replace("_", "-"): v for k, v in options.items()},
        })
        self.manager = NetworkManager(self.cfg, watch_interval=0.2)
        self.bridge = defaults.bridge_name(self.cfg)
        self.network = defaults.network_name(self.cfg)
        self._prefix = ""
        self.used: set[str] = set()
        guard.bridges.append(self.bridge)
        guard.admin_chains.append(defaults.admin_chain(self.cfg))
        guard.instances.append(self.cfg.instance_id)

    def req(self, sandbox_id: str, **kw: object) -> PodNetworkRequest:
        self.used.add(sandbox_id)
        return PodNetworkRequest(sandbox_id=sandbox_id, netns_path=self.cfg.netns_dir / sandbox_id, **kw)  # type: ignore[arg-type]

    async def pod(self, sandbox_id: str, **kw: object) -> tuple[PodNetworkRequest, str]:
        req = self.req(sandbox_id, **kw)
        await netns.create(req.netns_path)
        status = await self.manager.setup(req)
        return req, status.ip

    async def remove(self, req: PodNetworkRequest) -> None:
        await self.manager.teardown(req)
        await netns.remove(req.netns_path)

    def subnet_prefix(self) -> str:
        """``10.123.N.`` of the default network this instance wrote at start."""
        if not self._prefix:
            net = json.loads((self.cfg.cni_conf_dir / defaults.FILE_NAME).read_text())
            self._prefix = defaults.subnets_of(net)[0].rsplit(".", 1)[0] + "."
        return self._prefix

    def leftovers(self) -> dict[str, list[str]]:
        ipam = self.cfg.cni_state_dir / "ipam"
        prefix = self.subnet_prefix()
        return {
            "ips": sorted(p.name for p in ipam.rglob("*") if p.name[0].isdigit()) if ipam.exists() else [],
            "netns": sorted(p.name for p in self.cfg.netns_dir.iterdir()) if self.cfg.netns_dir.exists() else [],
            "netns_mounts": mounted_under(self.cfg.netns_dir),
            "cache": sorted(p.name for p in (self.cfg.cni_state_dir / "results").glob("*")),
            "veths": bridge_ports(self.bridge),
            "tagged_rules": tagged_rules(self.network),
            "firewall_rules": firewall_rules(prefix),
            "chains": container_chains(self.network, self.used),
        }


def clean(net: Net) -> dict[str, list[str]]:
    return {k: [] for k in net.leftovers()}
