"""NetworkManager: pod networking for sandboxes, the one entry point the runtime calls.

    setup(req)     ADD the default network (or req.networks, eth0, eth1, ...) into req.netns_path
    teardown(req)  DEL every attachment with its cached result (idempotent, tolerant of a missing netns)
    check(req)     CHECK with the cached results
    connect/disconnect  one more network in or out of a set-up sandbox (Docker's network connect)
    status()       NetworkReady, from the watched conf dir
    gc(known)      release what belongs to no known sandbox (see pkg/cni/gc.py)

The conf dir is watched (polled: cheap, and correct on every filesystem); the
loaded default network is validated (plugins present and speaking its
cniVersion) whenever the dir or the bin dirs change (pkg.cni.confdir).  Calls
for one sandbox are serialised; different sandboxes run concurrently.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from pkg import errors
from pkg.aio import CleanupStack, cancel_tasks, create_guarded_task
from pkg.cni import config as cni_config
from pkg.cni import defaults, gc, netns, netrules, noop, request
from pkg.cni import status as status_mod
from pkg.cni.cache import Attachment, AttachmentCache
from pkg.cni.chain import Runner
from pkg.cni.confdir import ConfDir
from pkg.cni.config import NetworkConfigList
from pkg.cni.exec import Invocation
from pkg.cni.model import (
    DEFAULT_NETWORK,
    NO_NETWORK,
    Endpoint,
    NetworkAttachment,
    PodNetworkRequest,
    PodNetworkStatus,
)
from pkg.config import Config
from pkg.health import Condition

log = logging.getLogger(__name__)

IFNAME = "eth0"
WATCH_INTERVAL = 2.0
GC_INTERVAL = 300.0

SandboxLister = Callable[[], Awaitable[set[str]]]
# A named (non-default) network's conflist, with its default route when it has a way out.
NetworkResolver = Callable[[str], Awaitable[NetworkConfigList]]
# Every named network this instance defines (for the leak GC of their iptables state).
NetworkLister = Callable[[], Awaitable[list[NetworkConfigList]]]
# Fills in what a network hands out itself before ADD (an overlay's address from the cluster's IPAM).
AttachmentHook = Callable[[PodNetworkRequest, NetworkAttachment], Awaitable[NetworkAttachment]]


class EndpointListener(Protocol):
    """Told the sandbox's complete endpoint list after each change ([] once it is torn down)."""

    async def endpoints_changed(self, sandbox_id: str, netns_path: Path | None, endpoints: list[Endpoint]) -> None:
        ...


class NetworkManager:
    def __init__(self, cfg: Config, *, watch_interval: float = WATCH_INTERVAL, gc_interval: float = GC_INTERVAL,
                 manage_rules: bool = True):
        self.cfg = cfg
        self.runner = Runner(list(cfg.cni_bin_dir), cfg.cni_timeout)
        self.cache = AttachmentCache(cfg.cni_state_dir / "results")
        self._watch_interval = watch_interval
        self._gc_interval = gc_interval
        self._locks: dict[str, asyncio.Lock] = {}
        self._lock_users: dict[str, int] = {}
        self.inflight: set[str] = set()
        self._tasks: list[asyncio.Task[Any]] = []
        # Named networks (Docker's user-defined ones) come from pkg.docker.networks, which sets these.
        self.resolver: NetworkResolver | None = None
        self.named_networks: NetworkLister | None = None
        self.listeners: list[EndpointListener] = []
        self.attachment_hook: AttachmentHook | None = None
        # Masquerade and FORWARD accepts per network for the networks Narwhal builds (netrules.py); Docker's
        # networks (pkg.docker.networks) install theirs through the same object.
        self.rules = netrules.NetworkRules(cfg.instance_id)
        # The default network, NetworkReady; manage_rules False: only reads the config (``narwhald cleanup``).
        self.conf = ConfDir(cfg, manage_rules=manage_rules)

    # ---- lifecycle ----
    async def start(self, sandbox_ids: SandboxLister | None = None) -> None:
        """Write the default network if the conf dir has none, load it, start watching and GC.

        Without ``sandbox_ids`` (the runtime's lister of every sandbox it knows,
        including ones being created) there is no periodic GC: nothing is ever
        released on a guess."""
        await asyncio.to_thread(defaults.write_if_missing, self.cfg)
        await asyncio.to_thread(defaults.upgrade_legacy, self.cfg)
        await self.reload()
        condition = self.conf.condition
        log.info("NetworkReady=%s %s %s", condition.status, condition.reason, condition.message)
        self._tasks.append(create_guarded_task(self._watch, "cni-conf-watcher", restart_delay=1.0))
        if sandbox_ids is not None:
            lister = sandbox_ids
            self._tasks.append(create_guarded_task(lambda: self._gc_loop(lister), "cni-gc", restart_delay=5.0))

    async def stop(self) -> None:
        await cancel_tasks(self._tasks)
        self._tasks.clear()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._watch_interval)
            await self.reload()

    async def _gc_loop(self, sandbox_ids: SandboxLister) -> None:
        while True:
            await self.gc(await sandbox_ids())
            await asyncio.sleep(self._gc_interval)

    # ---- config and status (pkg.cni.confdir) ----
    async def reload(self) -> Condition:
        """Re-load and re-validate the default network if anything changed; the NetworkReady condition."""
        return await self.conf.reload(self.runner, self.rules)

    async def status(self) -> Condition:
        return await self.reload()

    async def network(self) -> NetworkConfigList:
        """The default network, or FailedPrecondition saying why there is none."""
        condition = await self.reload()
        if self.conf.network is None:
            raise errors.FailedPrecondition(f"network not ready: {condition.reason}: {condition.message}")
        return self.conf.network

    # ---- per-sandbox serialisation ----
    @contextmanager
    def _claim(self, sandbox_id: str) -> Iterator[asyncio.Lock]:
        """This sandbox's lock, marked in flight so GC leaves it alone meanwhile."""
        lock = self._locks.setdefault(sandbox_id, asyncio.Lock())
        self._lock_users[sandbox_id] = self._lock_users.get(sandbox_id, 0) + 1
        self.inflight.add(sandbox_id)
        try:
            yield lock
        finally:
            self._lock_users[sandbox_id] -= 1
            if not self._lock_users[sandbox_id]:
                del self._lock_users[sandbox_id], self._locks[sandbox_id]
                self.inflight.discard(sandbox_id)

    # ---- ADD / DEL / CHECK ----
    _validate = staticmethod(request.validate)
    runtime_config = staticmethod(request.runtime_config)
    cni_args = staticmethod(request.cni_args)

    async def setup(self, req: PodNetworkRequest) -> PodNetworkStatus:
        """ADD the requested networks (the default one when none is named) into the pod's netns,
        eth0, eth1, ... in order.  On any failure (cancellation included) every chain already
        ADDed is DELeted again, so nothing is left attached."""
        self._validate(req)
        wanted = self._wanted(req)
        with self._claim(req.sandbox_id) as lock:
            async with lock:
                if not await asyncio.to_thread(netns.exists, req.netns_path):
                    raise errors.NotFound(f"network namespace {req.netns_path} not found")
                ifnames = await self.cache.ifnames(req.sandbox_id)
                existing = await self.cache.all(req.sandbox_id)
                if existing and len(existing) == len(ifnames) == len(wanted) and all(a.result for a in existing):
                    return status_mod.sandbox_status(existing)
                if ifnames:  # an ADD interrupted by a crash: undo it first
                    await self._release(req.sandbox_id, req.netns_path)
                attached: list[Attachment] = []
                async with CleanupStack(timeout=self.cfg.cni_timeout * (4 * len(wanted) + 1)) as cleanup:
                    for index, want in enumerate(wanted):
                        attached.append(await self._attach(req, want, f"eth{index}", cleanup))
                    status = status_mod.sandbox_status(attached)
                    cleanup.add(f"forget the endpoints of {req.sandbox_id}",
                                lambda: self._notify(req.sandbox_id, None, []))
                    await self._notify(req.sandbox_id, req.netns_path, attached)
                    cleanup.commit()
                return status

    def _wanted(self, req: PodNetworkRequest) -> list[NetworkAttachment]:
        """The networks to ADD, in interface order; [] for a loopback-only sandbox."""
        if not req.networks:
            return [NetworkAttachment("")]
        names = [a.network for a in req.networks]
        if NO_NETWORK in names:
            if len(names) > 1:
                raise errors.InvalidArgument(f"network {NO_NETWORK!r} cannot be combined with other networks")
            return []
        if len(set(names)) != len(names):
            raise errors.InvalidArgument(f"a sandbox joins each network once: {', '.join(names)}")
        return [dataclasses.replace(a, network="") if a.network == DEFAULT_NETWORK else a for a in req.networks]

    async def _config_for(self, network: str, primary: bool) -> NetworkConfigList:
        """The conflist to ADD: the default network's, or a named network's from the resolver.
        Only the first interface takes the default route (as Docker's gateway endpoint)."""
        if not network:
            net = await self.network()
        elif self.resolver is None:
            raise errors.NotFound(f"network {network} not found")
        else:
            net = await self.resolver(network)
        return net if primary else status_mod.without_default_routes(net)

    async def _attach(
        self, req: PodNetworkRequest, want: NetworkAttachment, ifname: str, cleanup: CleanupStack,
    ) -> Attachment:
        primary = ifname == IFNAME
        if self.attachment_hook is not None and want.network:
            want = await self.attachment_hook(req, want)
        net = await self._config_for(want.network, primary)
        runtime_config = self.runtime_config(req) if primary else {}
        asked = [ip for ip in (want.ipv4, want.ipv6) if ip]
        for ip in asked:
            request.check_address(ip, defaults.subnets_of(net.raw), want.network or DEFAULT_NETWORK)
        if asked:
            runtime_config["ips"] = asked
        if want.mac:
            runtime_config["mac"] = want.mac
        # What this request makes no-ops of Narwhal's own chain stays out of ADD; the list as run is cached, so
        # DEL and CHECK run the same plugins (an attachment cached with the whole chain is DELeted whole).
        net, skipped = noop.prune(net, runtime_config)
        att = Attachment(
            sandbox_id=req.sandbox_id, network_name=net.name, ifname=ifname, netns=str(req.netns_path),
            cni_args=self.cni_args(req), config=net.raw, runtime_config=runtime_config,
            network=want.network, aliases=tuple(want.aliases), links=tuple(want.links), skipped=skipped,
        )
        progress: list[dict[str, Any]] = []
        inv = Invocation("ADD", req.sandbox_id, str(req.netns_path), ifname, att.cni_args)
        cleanup.add(f"cni: DEL {net.name} {ifname} for {req.sandbox_id}", lambda: self._rollback(att, net, progress))
        await self.cache.put(att)  # the intent, before any plugin runs (see cache.py)
        raw = await self.runner.add(net, inv, att.runtime_config, progress)
        done = dataclasses.replace(att, result=raw)
        status = status_mod.pod_status(done, net.name)
        await self.cache.put(done)
        log.info("CNI: sandbox %s attached to %s as %s with %s", req.sandbox_id, net.name, ifname,
                 ", ".join([status.ip, *status.additional_ips]))
        return done

    async def _rollback(self, att: Attachment, net: NetworkConfigList, progress: list[dict[str, Any]]) -> None:
        present = await asyncio.to_thread(netns.exists, Path(att.netns))
        inv = Invocation("DEL", att.sandbox_id, att.netns if present else "", att.ifname, att.cni_args)
        await self.runner.delete(net, inv, att.runtime_config, progress[-1] if progress else None)
        await gc.cleanup_iptables({att.sandbox_id}, att.network_name)
        await self.cache.delete(att.sandbox_id, att.ifname)

    async def endpoints(self, sandbox_id: str) -> list[Endpoint]:
        """The sandbox's completed attachments, eth0 first (empty when it has none)."""
        return [status_mod.endpoint(a) for a in await self.cache.all(sandbox_id) if a.result is not None]

    async def _notify(self, sandbox_id: str, netns_path: Path | None, attachments: list[Attachment]) -> None:
        endpoints = [status_mod.endpoint(a) for a in attachments if a.result is not None]
        for listener in self.listeners:
            await listener.endpoints_changed(sandbox_id, netns_path, endpoints)

    async def teardown(self, req: PodNetworkRequest) -> None:
        """DEL every attachment with the config and result cached at ADD time.
        Nothing cached means nothing attached: success."""
        with self._claim(req.sandbox_id) as lock:
            async with lock:
                await self._release(req.sandbox_id, req.netns_path)

    async def _release(self, sandbox_id: str, netns_path: Path | None = None) -> None:
        """DEL all of a sandbox's attachments (each gets its turn; the first failure is raised)."""
        first: errors.NarwhalError | None = None
        ifnames = await self.cache.ifnames(sandbox_id)
        for att in reversed(await self.cache.all(sandbox_id)):
            try:
                await self._delete(att, netns_path)
            except errors.NarwhalError as exc:
                first = first or exc
        if first is None:
            for ifname in ifnames:  # unreadable records: nothing to DEL with
                await self.cache.delete(sandbox_id, ifname)
        if ifnames:
            await self._notify(sandbox_id, None, [])
        if first is not None:
            raise first

    async def _delete(self, att: Attachment, netns_path: Path | None = None) -> None:
        net = cni_config.from_dict(att.config, Path(f"<cached {att.network_name}>"))
        path = Path(att.netns) if att.netns else netns_path
        present = path is not None and await asyncio.to_thread(netns.exists, path)
        inv = Invocation("DEL", att.sandbox_id, str(path) if present else "", att.ifname, att.cni_args)
        # An ADD cut short by a crash left no result, so the firewall plugin's DEL cannot know the
        # pod's IPs: take them from our host-local allocations before DEL releases those.
        ips: frozenset[str] = frozenset()
        if att.result is None:
            allocations = await asyncio.to_thread(gc.scan_ipam, defaults.ipam_dir(self.cfg))
            ips = frozenset(a.ip for a in allocations
                            if a.sandbox_id == att.sandbox_id and a.path.parent.name == att.network_name)
        # bridge learns the IPs to unmasquerade from the pod's interface: when the netns or the
        # interface is already gone its chain stays behind.  Only then sweep what is tagged for this
        # pod: the sweep dumps and parses the host's whole nat table (most of StopPodSandbox's
        # time on a host with many rules, hack/bench), the plugins clean up after themselves otherwise.
        sweep = att.result is None or path is None or not present or not await netns.has_link(path, att.ifname)
        await self.runner.delete(net, inv, att.runtime_config, att.result)
        if sweep:
            await gc.cleanup_iptables({att.sandbox_id}, att.network_name, ips)
        await self.cache.delete(att.sandbox_id, att.ifname)
        log.info("CNI: sandbox %s detached from %s (%s)", att.sandbox_id, att.network_name, att.ifname)

    # ---- joining and leaving networks while running (Docker's network connect/disconnect) ----
    async def connect(self, req: PodNetworkRequest, want: NetworkAttachment) -> Endpoint:
        """ADD one more network to a sandbox that is set up, on its lowest free ethN."""
        self._validate(req)
        if want.network == NO_NETWORK:
            raise errors.InvalidArgument(f"cannot connect to network {NO_NETWORK!r}")
        network = "" if want.network == DEFAULT_NETWORK else want.network
        with self._claim(req.sandbox_id) as lock:
            async with lock:
                if not await asyncio.to_thread(netns.exists, req.netns_path):
                    raise errors.NotFound(f"network namespace {req.netns_path} not found")
                existing = await self.cache.all(req.sandbox_id)
                if any(a.network == network for a in existing):
                    raise errors.AlreadyExists(f"sandbox {req.sandbox_id} is already on network {want.network}")
                taken = set(await self.cache.ifnames(req.sandbox_id))
                ifname = next(f"eth{i}" for i in range(len(taken) + 1) if f"eth{i}" not in taken)
                async with CleanupStack(timeout=self.cfg.cni_timeout * 5) as cleanup:
                    att = await self._attach(req, dataclasses.replace(want, network=network), ifname, cleanup)
                    cleanup.add(f"restore the endpoints of {req.sandbox_id}",
                                lambda: self._notify(req.sandbox_id, req.netns_path, existing))
                    await self._notify(req.sandbox_id, req.netns_path, sorted(
                        [*existing, att], key=lambda a: status_mod.ifname_key(a.ifname)))
                    cleanup.commit()
                return status_mod.endpoint(att)

    async def disconnect(self, sandbox_id: str, network: str, netns_path: Path | None = None) -> None:
        """DEL one network from a sandbox; NotFound when it is not on it."""
        network = "" if network == DEFAULT_NETWORK else network
        with self._claim(sandbox_id) as lock:
            async with lock:
                existing = await self.cache.all(sandbox_id)
                att = next((a for a in existing if a.network == network), None)
                if att is None:
                    raise errors.NotFound(f"sandbox {sandbox_id} is not on network {network or DEFAULT_NETWORK}")
                await self._delete(att, netns_path)
                await self._notify(sandbox_id, Path(att.netns) if att.netns else netns_path,
                                   [a for a in existing if a is not att])

    async def check(self, req: PodNetworkRequest) -> None:
        """CHECK every attachment (plugins verify their state); NotFound when there is none."""
        with self._claim(req.sandbox_id) as lock:
            async with lock:
                attachments = await self.cache.all(req.sandbox_id)
                if not attachments or any(a.result is None for a in attachments):
                    raise errors.NotFound(f"sandbox {req.sandbox_id} has no network attachment")
                for att in attachments:
                    net = cni_config.from_dict(att.config, Path(f"<cached {att.network_name}>"))
                    inv = Invocation("CHECK", att.sandbox_id, att.netns, att.ifname, att.cni_args)
                    await self.runner.check(net, inv, att.runtime_config, att.result)

    async def attachment(self, sandbox_id: str) -> PodNetworkStatus | None:
        """The pod's network status from the cache (for recovery after a restart), or None."""
        att = await self.cache.get(sandbox_id)
        if att is None or att.result is None:
            return None
        return status_mod.pod_status(att, att.network_name)

    # ---- leak GC ----
    async def gc(self, known_sandbox_ids: set[str], min_age: float = 0.0) -> None:
        """Release IP allocations, cached attachments, netns and iptables state of sandboxes that
        are neither known nor in flight.  ``known_sandbox_ids`` must include sandboxes being created."""
        await gc.collect(self, known_sandbox_ids, min_age)

    def own_subnets(self) -> list[str]:
        """The pod subnets of this instance's own default network (empty when another config is in use)."""
        net = self.conf.network
        if net is None or net.name != defaults.network_name(self.cfg):
            return []
        return defaults.subnets_of(net.raw)

    async def release_unknown(self, sandbox_id: str) -> None:
        """GC: DEL the attachments of a sandbox nobody knows, under its lock (in flight meanwhile)."""
        with self._claim(sandbox_id) as lock:
            async with lock:
                await self._release(sandbox_id)

