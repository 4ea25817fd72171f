"""Plugins that would do nothing for a request, left out of the chains Narwhal builds itself.

Every plugin of a chain is an exec of a Go binary (20-40 ms each on a loaded host, ADD and DEL), and in
Narwhal's own chains (the default network it writes, Docker's networks) three of them act only when the
request asks for something.  Read against containernetworking/plugins v1.1.1 (Debian's
containernetworking-plugins 1.1.1):

* portmap: ADD, DEL and CHECK return at once (ADD passing prevResult through) when
  ``runtimeConfig.portMappings`` is empty;
* bandwidth: ADD passes prevResult through when no rate is configured or asked; DEL deletes the ifb
  device only ADD with an egress rate makes (a missing one is success); CHECK dereferences the absent
  limits (it cannot pass without them);
* tuning: ADD enters the netns, writes no sysctl, makes no backup and changes nothing when neither its
  config nor the ``mac`` capability asks for a MAC, MTU, promiscuous or all-multicast mode or a sysctl;
  DEL restores only from the backup file such an ADD never wrote.

So such a plugin is dropped from the list before ADD, and the attachment cache keeps the list as ADD ran
it: DEL and CHECK (after a restart or a kill -9 too) run exactly those plugins, and an attachment cached
by a version that ran all of them is DELeted through all of them.  Conflists an administrator provides
are never pruned: they run as libcni runs them (``NetworkConfigList.generated`` is False for them).
"""
from __future__ import annotations

import dataclasses
from typing import Any

from pkg.cni.config import NetworkConfigList

# What, in a plugin's own config, would make it act whatever the request asks.
_TUNING_KEYS = ("sysctl", "mac", "promisc", "mtu", "allmulti", "args")
_BANDWIDTH_KEYS = ("ingressRate", "ingressBurst", "egressRate", "egressBurst")


def _asked(runtime_config: dict[str, Any], plugin: dict[str, Any], capability: str) -> bool:
    """The request passes this capability to the plugin (it declares it and the value is not empty)."""
    caps = plugin.get("capabilities")
    return isinstance(caps, dict) and caps.get(capability) is True and bool(runtime_config.get(capability))


def is_noop(plugin: dict[str, Any], runtime_config: dict[str, Any]) -> bool:
    """True when this plugin, called with ``runtime_config``'s capability args, does nothing on ADD, DEL or
    CHECK (see the module docstring for why each)."""
    kind = plugin.get("type")
    if kind == "portmap":
        return not _asked(runtime_config, plugin, "portMappings") and not plugin.get("runtimeConfig")
    if kind == "bandwidth":
        return (not _asked(runtime_config, plugin, "bandwidth") and not plugin.get("runtimeConfig")
                and not any(plugin.get(k) for k in _BANDWIDTH_KEYS))
    if kind == "tuning":
        return (not _asked(runtime_config, plugin, "mac") and not plugin.get("runtimeConfig")
                and not any(plugin.get(k) for k in _TUNING_KEYS))
    return False


def prune(net: NetworkConfigList, runtime_config: dict[str, Any]) -> tuple[NetworkConfigList, tuple[str, ...]]:
    """The list to ADD for this request, and the types of the plugins left out.  Only a list Narwhal built
    (``generated``) is pruned, never the first plugin (the one that makes the interface)."""
    if not net.generated or len(net.plugins) < 2:
        return net, ()
    kept = [net.plugins[0]]
    skipped: list[str] = []
    for plugin in net.plugins[1:]:
        if is_noop(plugin, runtime_config):
            skipped.append(str(plugin.get("type")))
        else:
            kept.append(plugin)
    if not skipped:
        return net, ()
    return dataclasses.replace(net, plugins=kept, raw={**net.raw, "plugins": kept}), tuple(skipped)
