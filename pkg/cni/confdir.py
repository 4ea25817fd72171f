"""The conf dir's default network: loaded, validated against the installed plugins, its rules, NetworkReady.

Separate from pkg.cni.manager (which ADDs, DELs and CHECKs sandboxes' attachments) because this is the
configuration side, with a state of its own: the default network is re-loaded and re-validated (plugins
present and speaking its cniVersion) only when a config file or a plugin changed (a fingerprint of both dirs,
polled: cheap, and correct on every filesystem), and the result is the NetworkReady condition kubelet reads.
The masquerade and FORWARD rules of a default network Narwhal built in the current shape go with it.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import os

from pkg import errors
from pkg.cni import config as cni_config
from pkg.cni import defaults, netrules
from pkg.cni.chain import Runner
from pkg.cni.config import NetworkConfigList
from pkg.config import Config
from pkg.health import NETWORK_READY, Condition

log = logging.getLogger(__name__)


class ConfDir:
    def __init__(self, cfg: Config, *, manage_rules: bool) -> None:
        self.cfg = cfg
        self.network: NetworkConfigList | None = None  # the default network, None while not ready
        self.condition = Condition(NETWORK_READY, False, "NetworkNotLoaded", "network config not loaded yet")
        self._signature: object = None
        self._lock = asyncio.Lock()
        self._ruled: netrules.BridgeNetwork | None = None  # the default network whose rules are in place
        self._manage_rules = manage_rules  # False: only reads the config (``narwhald cleanup``)

    def _fingerprint(self) -> object:
        """Changes whenever a config file or an installed plugin changes."""
        entries: list[tuple[str, int, int, int]] = []
        for directory in (self.cfg.cni_conf_dir, *self.cfg.cni_bin_dir):
            try:
                with os.scandir(directory) as it:
                    for e in it:
                        if directory == self.cfg.cni_conf_dir and not e.name.endswith(cni_config.EXTENSIONS):
                            continue
                        st = e.stat()
                        entries.append((e.path, st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                entries.append((str(directory), -1, -1, -1))
        return tuple(sorted(entries))

    async def reload(self, runner: Runner, rules: netrules.NetworkRules) -> Condition:
        """Re-load and re-validate (with ``runner``'s plugins) the default network if anything changed, its rules
        kept in ``rules``; the NetworkReady condition.  Both are the manager's, read at each call."""
        async with self._lock:
            fingerprint = await asyncio.to_thread(self._fingerprint)
            if fingerprint == self._signature:
                return self.condition
            network: NetworkConfigList | None = None
            rules_failed = False
            try:
                network = await asyncio.to_thread(cni_config.load_default, self.cfg.cni_conf_dir)
                await runner.validate(network)
                if defaults.is_generated(self.cfg, network.path, network.raw):
                    network = dataclasses.replace(network, generated=True)
                rules_failed = True
                await self._network_rules(network, rules)
                rules_failed = False
            except errors.NotFound as exc:
                condition = Condition(NETWORK_READY, False, "NoNetworkConfig", exc.message)
                network = None
            except errors.InvalidArgument as exc:
                condition = Condition(NETWORK_READY, False, "InvalidNetworkConfig", exc.message)
                network = None
            except (errors.FailedPrecondition, errors.DeadlineExceeded, errors.Internal) as exc:
                condition = Condition(NETWORK_READY, False, "NetworkPluginNotReady", exc.message)
                network = None
            else:
                condition = Condition(NETWORK_READY, True, "", f"default network {network.name!r} from {network.path}")
            if condition != self.condition:
                log.info("CNI: NetworkReady=%s %s %s", condition.status, condition.reason, condition.message)
            # Rules that could not be installed (a busy xtables lock, iptables missing) are tried again at the
            # next status or setup, not only when a file changes.
            self.network, self.condition = network, condition
            self._signature = None if rules_failed else fingerprint
            return condition

    async def _network_rules(self, network: NetworkConfigList, rules: netrules.NetworkRules) -> None:
        """The per-network rules of the default network when Narwhal built it in the current shape (an
        older or foreign shape does it per pod, in its plugins); the previous one's go when it changes."""
        wanted = netrules.of_conflist(network.raw) if network.generated else None
        if wanted == self._ruled or not self._manage_rules:
            return
        if self._ruled is not None:
            await rules.remove(self._ruled)
            self._ruled = None
        if wanted is not None:
            await rules.ensure(wanted)
            self._ruled = wanted
