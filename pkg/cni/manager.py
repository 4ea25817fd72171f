"""NetworkManager: pod networking for sandboxes, the one entry point the runtime calls.

    setup(req)     ADD the default network into req.netns_path → PodNetworkStatus
    teardown(req)  DEL with the cached result (idempotent, tolerant of a missing netns)
    check(req)     CHECK with the cached result
    status()       NetworkReady, from the watched conf dir
    gc(known)      release what belongs to no known sandbox (see pkg/cni/gc.py)

The conf dir is watched (polled: cheap, and correct on every filesystem); the
loaded default network is validated (plugins present and speaking its
cniVersion) whenever the dir or the bin dirs change.  Calls for one sandbox
are serialised; different sandboxes run concurrently.
"""
from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import os
import re
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pkg import errors
from pkg.aio import CleanupStack, cancel_tasks, create_guarded_task
from pkg.cni import config as cni_config
from pkg.cni import defaults, gc, netns
from pkg.cni import result as cni_result
from pkg.cni.cache import Attachment, AttachmentCache
from pkg.cni.chain import Runner
from pkg.cni.config import NetworkConfigList
from pkg.cni.exec import Invocation
from pkg.cni.model import PodNetworkRequest, PodNetworkStatus
from pkg.config import Config
from pkg.health import NETWORK_READY, Condition

log = logging.getLogger(__name__)

IFNAME = "eth0"
WATCH_INTERVAL = 2.0
GC_INTERVAL = 300.0
MAX_INT32 = 2**31 - 1  # kubelet's burst for bandwidth limits: "no burst limit"
_SANDBOX_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_PROTOCOLS = ("tcp", "udp", "sctp")

SandboxLister = Callable[[], Awaitable[set[str]]]


def _arg_value(value: str) -> str:
    """CNI_ARGS is ``K=V;K=V``: values cannot carry ';' or '='."""
    return value.replace(";", "").replace("=", "")


class NetworkManager:
    def __init__(self, cfg: Config, *, watch_interval: float = WATCH_INTERVAL, gc_interval: float = GC_INTERVAL):
        self.cfg = cfg
        self.runner = Runner(list(cfg.cni_bin_dir), cfg.cni_timeout)
        self.cache = AttachmentCache(cfg.cni_state_dir / "results")
        self._watch_interval = watch_interval
        self._gc_interval = gc_interval
        self._network: NetworkConfigList | None = None
        self._condition = Condition(NETWORK_READY, False, "NetworkNotLoaded", "network config not loaded yet")
        self._signature: object = None
        self._reload_lock = asyncio.Lock()
        self._locks: dict[str, asyncio.Lock] = {}
        self._lock_users: dict[str, int] = {}
        self.inflight: set[str] = set()
        self._tasks: list[asyncio.Task[Any]] = []

    # ---- lifecycle ----
    async def start(self, sandbox_ids: SandboxLister | None = None) -> None:
        """Write the default network if the conf dir has none, load it, start watching and GC.

        Without ``sandbox_ids`` (the runtime's lister of every sandbox it knows,
        including ones being created) there is no periodic GC: nothing is ever
        released on a guess."""
        await asyncio.to_thread(defaults.write_if_missing, self.cfg)
        await self.reload()
        log.info("NetworkReady=%s %s %s", self._condition.status, self._condition.reason, self._condition.message)
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

    # ---- config and status ----
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

    async def reload(self) -> Condition:
        """Re-load and re-validate the default network if anything changed; the NetworkReady condition."""
        async with self._reload_lock:
            fingerprint = await asyncio.to_thread(self._fingerprint)
            if fingerprint == self._signature:
                return self._condition
            network: NetworkConfigList | None = None
            try:
                network = await asyncio.to_thread(cni_config.load_default, self.cfg.cni_conf_dir)
                await self.runner.validate(network)
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
            if condition != self._condition:
                log.info("CNI: NetworkReady=%s %s %s", condition.status, condition.reason, condition.message)
            self._network, self._condition, self._signature = network, condition, fingerprint
            return condition

    async def status(self) -> Condition:
        return await self.reload()

    async def network(self) -> NetworkConfigList:
        """The default network, or FailedPrecondition saying why there is none."""
        condition = await self.reload()
        if self._network is None:
            raise errors.FailedPrecondition(f"network not ready: {condition.reason}: {condition.message}")
        return self._network

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
    def _validate(self, req: PodNetworkRequest) -> None:
        if not _SANDBOX_ID.match(req.sandbox_id):
            raise errors.InvalidArgument(f"invalid sandbox id {req.sandbox_id!r}")
        for pm in req.port_mappings:
            if pm.protocol.lower() not in _PROTOCOLS:
                raise errors.InvalidArgument(f"port mapping protocol {pm.protocol!r}: expected tcp, udp or sctp")
            if not 0 < pm.container_port <= 65535 or not 0 <= pm.host_port <= 65535:
                raise errors.InvalidArgument(f"port mapping {pm.host_port}->{pm.container_port}: ports out of range")
            if pm.host_ip:
                try:
                    ipaddress.ip_address(pm.host_ip)
                except ValueError:
                    raise errors.InvalidArgument(f"port mapping hostIP {pm.host_ip!r} is not an IP address") from None
        if req.bandwidth_ingress < 0 or req.bandwidth_egress < 0:
            raise errors.InvalidArgument("bandwidth limits must not be negative")

    @staticmethod
    def runtime_config(req: PodNetworkRequest) -> dict[str, Any]:
        """The capability args (libcni's CapabilityArgs) for this pod."""
        rc: dict[str, Any] = {}
        mappings = [
            {"hostPort": pm.host_port, "containerPort": pm.container_port, "protocol": pm.protocol.lower(),
             **({"hostIP": pm.host_ip} if pm.host_ip and not ipaddress.ip_address(pm.host_ip).is_unspecified
                else {})}  # 0.0.0.0 / :: mean every address, as "" does
            for pm in req.port_mappings if pm.host_port > 0  # hostPort 0: nothing to publish (kubelet's rule)
        ]
        if mappings:
            rc["portMappings"] = mappings
        if req.bandwidth_ingress or req.bandwidth_egress:
            bw: dict[str, int] = {}
            if req.bandwidth_ingress:
                bw.update(ingressRate=req.bandwidth_ingress, ingressBurst=MAX_INT32)
            if req.bandwidth_egress:
                bw.update(egressRate=req.bandwidth_egress, egressBurst=MAX_INT32)
            rc["bandwidth"] = bw
        if req.ips:
            rc["ips"] = list(req.ips)
        if req.mac:
            rc["mac"] = req.mac
        return rc

    @staticmethod
    def cni_args(req: PodNetworkRequest) -> str:
        pairs = [
            ("IgnoreUnknown", "1"),
            ("K8S_POD_NAMESPACE", req.pod_namespace),
            ("K8S_POD_NAME", req.pod_name),
            ("K8S_POD_INFRA_CONTAINER_ID", req.sandbox_id),
            ("K8S_POD_UID", req.pod_uid),
        ]
        return ";".join(f"{k}={_arg_value(v)}" for k, v in pairs)

    async def setup(self, req: PodNetworkRequest) -> PodNetworkStatus:
        """ADD the default network into the pod's netns.  On any failure (cancellation
        included) the chain is DELeted again, so nothing is left attached."""
        self._validate(req)
        with self._claim(req.sandbox_id) as lock:
            async with lock:
                net = await self.network()
                if not await asyncio.to_thread(netns.exists, req.netns_path):
                    raise errors.NotFound(f"network namespace {req.netns_path} not found")
                existing = await self.cache.get(req.sandbox_id)
                if existing is not None and existing.result is not None:
                    return self._pod_status(existing, existing.network_name)
                if existing is not None:  # an ADD interrupted by a crash: undo it first
                    await self._delete(existing, req.netns_path)
                att = Attachment(
                    sandbox_id=req.sandbox_id, network_name=net.name, ifname=IFNAME, netns=str(req.netns_path),
                    cni_args=self.cni_args(req), config=net.raw, runtime_config=self.runtime_config(req),
                )
                progress: list[dict[str, Any]] = []
                inv = Invocation("ADD", req.sandbox_id, str(req.netns_path), IFNAME, att.cni_args)
                async with CleanupStack(timeout=self.cfg.cni_timeout * (len(net.plugins) + 1)) as cleanup:
                    cleanup.add(f"cni: DEL {net.name} for {req.sandbox_id}",
                                lambda: self._rollback(att, net, progress))
                    await self.cache.put(att)  # the intent, before any plugin runs (see cache.py)
                    raw = await self.runner.add(net, inv, att.runtime_config, progress)
                    done = dataclasses.replace(att, result=raw)
                    status = self._pod_status(done, net.name)
                    await self.cache.put(done)
                    cleanup.commit()
                log.info("CNI: sandbox %s attached to %s with %s", req.sandbox_id, net.name,
                         ", ".join([status.ip, *status.additional_ips]))
                return status

    async def _rollback(self, att: Attachment, net: NetworkConfigList, progress: list[dict[str, Any]]) -> None:
        present = await asyncio.to_thread(netns.exists, Path(att.netns))
        inv = Invocation("DEL", att.sandbox_id, att.netns if present else "", att.ifname, att.cni_args)
        await self.runner.delete(net, inv, att.runtime_config, progress[-1] if progress else None)
        await gc.cleanup_iptables({att.sandbox_id}, att.network_name)
        await self.cache.delete(att.sandbox_id)

    def _pod_status(self, att: Attachment, network_name: str) -> PodNetworkStatus:
        assert att.result is not None
        res = cni_result.parse(att.result, str(att.config.get("cniVersion", "")))
        ips = res.sandbox_ips(att.ifname)
        if not ips:
            raise errors.Internal(f"CNI network {network_name} returned no IP for {att.ifname}")
        # IPv4 first, as containerd does: the primary pod IP, the rest for dual stack.
        ordered = sorted(ips, key=lambda i: i.version)
        mac = next((i.mac for i in res.interfaces if i.name == att.ifname and i.sandbox), "")
        return PodNetworkStatus(
            ip=ordered[0].ip, additional_ips=[i.ip for i in ordered[1:]], interface=att.ifname,
            network_name=network_name, mac=mac, gateway=ordered[0].gateway,
        )

    async def teardown(self, req: PodNetworkRequest) -> None:
        """DEL the pod's attachment with the config and result cached at ADD time.
        Nothing cached means nothing attached: success."""
        with self._claim(req.sandbox_id) as lock:
            async with lock:
                att = await self.cache.get(req.sandbox_id)
                if att is None:
                    return
                await self._delete(att, req.netns_path)

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
            ips = frozenset(a.ip for a in allocations if a.sandbox_id == att.sandbox_id)
        await self.runner.delete(net, inv, att.runtime_config, att.result)
        # bridge learns the IPs to unmasquerade from the pod's interface: when the netns or the
        # interface is already gone its chain stays behind.  Drop whatever is tagged for this pod.
        await gc.cleanup_iptables({att.sandbox_id}, att.network_name, ips)
        await self.cache.delete(att.sandbox_id)
        log.info("CNI: sandbox %s detached from %s", att.sandbox_id, att.network_name)

    async def check(self, req: PodNetworkRequest) -> None:
        """CHECK the attachment (plugins verify their state); NotFound when there is none."""
        with self._claim(req.sandbox_id) as lock:
            async with lock:
                att = await self.cache.get(req.sandbox_id)
                if att is None or att.result is None:
                    raise errors.NotFound(f"sandbox {req.sandbox_id} has no network attachment")
                net = cni_config.from_dict(att.config, Path(f"<cached {att.network_name}>"))
                inv = Invocation("CHECK", att.sandbox_id, att.netns, att.ifname, att.cni_args)
                await self.runner.check(net, inv, att.runtime_config, att.result)

    async def attachment(self, sandbox_id: str) -> PodNetworkStatus | None:
        """The pod's network status from the cache (for recovery after a restart), or None."""
        att = await self.cache.get(sandbox_id)
        if att is None or att.result is None:
            return None
        return self._pod_status(att, att.network_name)

    # ---- leak GC ----
    async def gc(self, known_sandbox_ids: set[str], min_age: float = 0.0) -> None:
        """Release IP allocations, cached attachments, netns and iptables state of sandboxes that
        are neither known nor in flight.  ``known_sandbox_ids`` must include sandboxes being created."""
        await gc.collect(self, known_sandbox_ids, min_age)
