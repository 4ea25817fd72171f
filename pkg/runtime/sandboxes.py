"""Pod sandboxes: run, stop, remove, status, list.

A sandbox is a set of pinned namespaces (network via pkg.cni.netns; IPC and
UTS via pkg.runtime.namespaces), files under its directories (hostname,
hosts, resolv.conf, a /dev/shm tmpfs) and — only when the pod shares its PID
namespace — an infra task running catatonit -P.  Its metadata is checkpointed
as a containerd container record (created *first*, so a crash at any later
step leaves a record that recovery cleans up); its status in a JSON file.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
import time
from pathlib import Path
from typing import Protocol

from pkg import errors
from pkg import metrics as metrics_mod
from pkg.aio import CleanupStack, rmtree
from pkg.cni.model import PodNetworkRequest
from pkg.containerd import containers as ctr_containers
from pkg.containerd import tasks as ctr_tasks
from pkg.model.codec import to_dict
from pkg.model.sandbox import NamespaceMode, SandboxConfig, SandboxMetadata, SandboxStatus
from pkg.model.state import SandboxState, transition
from pkg.mount import MS_NODEV, MS_NOEXEC, MS_NOSUID, mount, umount
from pkg.runtime import checkpoint, container_spec, etc_files, infra, namespaces, spec, spec_mounts
from pkg.runtime.context import RuntimeContext
from pkg.runtime.spec_options import Namespace

log = logging.getLogger(__name__)

SHM_SIZE = 64 << 20
KIND = "sandbox"


class SandboxService:
    def __init__(self, ctx: RuntimeContext) -> None:
        self.ctx = ctx
        # Set by the composition: stopping/removing a sandbox stops/removes its containers.
        self.containers: ContainerOps | None = None
        self.creating: set[str] = set()  # IDs mid-run: the network GC must not release them

    # ---------------- run ----------------
    @metrics_mod.lifecycle("sandbox", "run")
    async def run(self, config: SandboxConfig, runtime_handler: str = "") -> str:
        _validate(config)
        ctx = self.ctx
        handlers = ctx.cfg.runtime_handlers
        if runtime_handler and runtime_handler not in handlers:
            known = ", ".join(sorted(handlers))
            raise errors.NotFound(f"runtime handler {runtime_handler!r} is not configured (known: {known})")
        sandbox_id = secrets.token_hex(32)
        name = config.unique_name
        ctx.sandboxes.names.reserve(name, sandbox_id)
        self.creating.add(sandbox_id)
        try:
            async with CleanupStack() as cleanup:
                metadata = self._metadata(sandbox_id, config, runtime_handler or "runc")
                meta_dict = to_dict(metadata)

                async def release_shim_group() -> None:
                    await release_shim(ctx, sandbox_id)

                cleanup.add("release shim group", release_shim_group)
                # The record's spec names the pod's shim group, so recovery finds the group of a pod that has
                # no container yet (ShimGroups.adopt).
                infra_spec = await asyncio.to_thread(infra.sandbox_spec, ctx, metadata) if metadata.infra else {
                    "ociVersion": "1.0.2", "annotations": ctx.shim_group(sandbox_id)}
                await ctr_containers.create(
                    ctx.client, sandbox_id, spec=infra_spec, metadata=meta_dict,
                    labels={ctr_containers.KIND_LABEL: KIND},
                    runc_root=str(ctx.cfg.runc_root), runc_binary=handlers[metadata.runtime_handler],
                    image=infra.IMAGE_NAME if metadata.infra else "",
                )
                cleanup.add("delete sandbox record", lambda: ctr_containers.delete(ctx.client, sandbox_id))
                prestarter = ctx.shim_prestarter
                if prestarter is not None and ctx.cfg.shim_prestart:  # the first StartContainer finds it running
                    prestarter.launch(ctx.shim_group_name(sandbox_id))  # reaped by "release shim group"
                root, state = ctx.sandbox_root(sandbox_id), ctx.sandbox_state(sandbox_id)
                root.mkdir(parents=True)
                state.mkdir(parents=True)
                cleanup.add("remove sandbox dirs", lambda: rmtree(root, state))

                ipc = Path(metadata.ipc_path) if metadata.ipc_path else None
                uts = Path(metadata.uts_path) if metadata.uts_path else None

                async def pin_namespaces() -> None:
                    await namespaces.pin(ipc, uts, container_spec.sandbox_hostname(config))
                    cleanup.add("unpin ipc/uts", lambda: namespaces.unpin(ipc, uts))
                    if config.namespace_options.ipc != NamespaceMode.NODE:
                        shm = state / "shm"
                        shm.mkdir()
                        shm_size = config.shm_size or SHM_SIZE
                        mount("shm", shm, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, f"mode=1777,size={shm_size}")
                        cleanup.add("unmount shm", lambda: asyncio.to_thread(_umount, shm))

                async def wire_network() -> tuple[str, list[str]]:
                    if not metadata.netns_path:
                        return "", []
                    netns = Path(metadata.netns_path)
                    await ctx.netns_create(netns)
                    cleanup.add("remove netns", lambda: ctx.netns_remove(netns))
                    if config.no_network:
                        return "", []
                    request = self._network_request(metadata)
                    result = await ctx.network.setup(request)
                    cleanup.add("tear down pod network", lambda: ctx.network.teardown(request))
                    return result.ip, list(result.additional_ips)

                # Independent steps side by side: the CNI chain (most of RunPodSandbox, hack/bench) need not
                # wait for the unshare process.  Both run to the end, so each registers its own rollback
                # before the first failure unwinds the stack.
                pinned, wired = await asyncio.gather(pin_namespaces(), wire_network(), return_exceptions=True)
                for outcome in (pinned, wired):
                    if isinstance(outcome, BaseException):
                        raise outcome
                assert not isinstance(wired, BaseException)
                ip, extra_ips = wired

                await asyncio.to_thread(_write_pod_files, root, config, ip, extra_ips)

                pid = 0
                if metadata.infra:
                    pid = await infra.start(ctx, metadata)
                    cleanup.add("stop infra task", lambda: infra.stop(ctx, metadata))

                status = SandboxStatus(SandboxState.READY, ip=ip, additional_ips=extra_ips, infra_pid=pid,
                                       network_ready=bool(metadata.netns_path))
                checkpoint.write(root, status)
                ctx.sandboxes.add(sandbox_id, metadata, status)
                cleanup.commit()
        except BaseException:
            ctx.sandboxes.names.release(name)
            raise
        finally:
            self.creating.discard(sandbox_id)
        log.info("sandbox %s (%s) ready, ip %s", sandbox_id[:12], name, ip or "-")
        return sandbox_id

    def _metadata(self, sandbox_id: str, config: SandboxConfig, handler: str) -> SandboxMetadata:
        ctx = self.ctx
        ns = config.namespace_options
        state = ctx.sandbox_state(sandbox_id)
        return SandboxMetadata(
            id=sandbox_id,
            config=config,
            runtime_handler=handler,
            created_at=time.time_ns(),
            netns_path="" if ns.network == NamespaceMode.NODE else str(ctx.netns_path(sandbox_id)),
            ipc_path="" if ns.ipc == NamespaceMode.NODE else str(state / "ipc"),
            uts_path="" if NamespaceMode.NODE in (ns.network, ns.uts) else str(state / "uts"),
            infra=ns.pid == NamespaceMode.POD,
            cgroup_parent=config.cgroup_parent or ctx.default_cgroup_parent,
            sandbox_dir=str(ctx.sandbox_root(sandbox_id)),
        )

    def _network_request(self, metadata: SandboxMetadata) -> PodNetworkRequest:
        c = metadata.config
        return PodNetworkRequest(
            sandbox_id=metadata.id, netns_path=Path(metadata.netns_path), pod_name=c.name,
            pod_namespace=c.namespace, pod_uid=c.uid, port_mappings=list(c.port_mappings),
            bandwidth_ingress=_bandwidth(c.annotations, "kubernetes.io/ingress-bandwidth"),
            bandwidth_egress=_bandwidth(c.annotations, "kubernetes.io/egress-bandwidth"),
            networks=c.networks,
        )

    # ---------------- stop ----------------
    @metrics_mod.lifecycle("sandbox", "stop")
    async def stop(self, ref: str) -> None:
        """Stop every container, the infra task and the network; idempotent."""
        ctx = self.ctx
        sandbox_id = ctx.sandboxes.resolve(ref)
        async with ctx.sandboxes.lock(sandbox_id):
            metadata, status = ctx.sandboxes.get(sandbox_id)
            if self.containers is not None:
                await self.containers.stop_all_in_sandbox(sandbox_id)
            if metadata.infra:
                await infra.stop(ctx, metadata)
            if metadata.netns_path:
                await ctx.network.teardown(self._network_request(metadata))
                await ctx.netns_remove(Path(metadata.netns_path))
            _umount(ctx.sandbox_state(sandbox_id) / "shm")
            if status.state != SandboxState.NOTREADY:
                await self._set_state(sandbox_id, SandboxState.NOTREADY)

    async def release_network(self, ref: str) -> None:
        """The sandbox's network torn down ahead of its stop, by a front end that knows its containers have
        exited for good (Docker's AutoRemove): the CNI DEL then runs while the exit and the removal go on,
        not after them.  The stop that follows finds nothing left to DEL; a failed DEL is retried there."""
        ctx = self.ctx
        found = ctx.sandboxes.find(ref) if ref else None
        if found is None or not found[0].netns_path:
            return
        metadata = found[0]
        async with ctx.sandboxes.lock(metadata.id):
            if ctx.sandboxes.find(metadata.id) is not None:
                await ctx.network.teardown(self._network_request(metadata))

    async def _set_state(self, sandbox_id: str, state: SandboxState) -> None:
        ctx = self.ctx

        def change(old: SandboxStatus) -> SandboxStatus:
            return transition(old, state, f"sandbox {sandbox_id}",
                              infra_pid=0 if state != SandboxState.READY else old.infra_pid,
                              network_ready=False if state == SandboxState.NOTREADY else old.network_ready, message="")

        async def persist(new: SandboxStatus) -> None:
            checkpoint.write(ctx.sandbox_root(sandbox_id), new)

        await ctx.sandboxes.update(sandbox_id, change, persist)

    async def reconcile_all(self) -> None:
        """READY sandboxes whose infra task or netns vanished become NOTREADY."""
        ctx = self.ctx
        for sandbox_id, metadata, status in ctx.sandboxes:
            if status.state != SandboxState.READY:
                continue
            gone = bool(metadata.netns_path) and not Path(metadata.netns_path).exists()
            if metadata.infra and not gone:
                task = await ctr_tasks.get(ctx.client, sandbox_id)
                gone = task is None or task.status != ctr_tasks.TaskStatus.RUNNING
            if gone:
                await self._set_state(sandbox_id, SandboxState.NOTREADY)

    async def infra_exited(self, sandbox_id: str) -> None:
        """The exit monitor saw the infra task die: the sandbox is no longer ready."""
        if self.ctx.sandboxes.find(sandbox_id) is not None:
            await self._set_state(sandbox_id, SandboxState.NOTREADY)

    # ---------------- remove ----------------
    @metrics_mod.lifecycle("sandbox", "remove")
    async def remove(self, ref: str) -> None:
        """Stop if needed, remove containers and every trace; a missing sandbox is success."""
        ctx = self.ctx
        try:
            sandbox_id = ctx.sandboxes.resolve(ref)
        except errors.NotFound:
            return
        metadata, status = ctx.sandboxes.get(sandbox_id)
        if status.state != SandboxState.NOTREADY or metadata.netns_path and Path(metadata.netns_path).exists():
            await self.stop(sandbox_id)
        async with ctx.sandboxes.lock(sandbox_id):
            if self.containers is not None:
                await self.containers.remove_all_in_sandbox(sandbox_id)
            await release_resources(ctx, metadata)
            ctx.sandboxes.delete(sandbox_id)
            ctx.sandboxes.names.release(metadata.config.unique_name)
        log.info("sandbox %s removed", sandbox_id[:12])

    # ---------------- queries ----------------
    def get(self, ref: str) -> tuple[SandboxMetadata, SandboxStatus]:
        return self.ctx.sandboxes.get(ref)

    def list(self) -> list[tuple[SandboxMetadata, SandboxStatus]]:
        return [(m, s) for _, m, s in self.ctx.sandboxes]


class ContainerOps(Protocol):
    """What the sandbox service needs from the container service (set after both exist)."""

    async def stop_all_in_sandbox(self, sandbox_id: str) -> None: ...

    async def remove_all_in_sandbox(self, sandbox_id: str) -> None: ...


async def release_resources(ctx: RuntimeContext, metadata: SandboxMetadata) -> None:
    """Everything a sandbox holds besides its containers; each step idempotent.

    Used by remove and by recovery for sandboxes whose creation never finished."""
    sandbox_id = metadata.id
    if metadata.infra:
        await infra.stop(ctx, metadata)
    if metadata.netns_path:
        netns = Path(metadata.netns_path)
        try:
            await ctx.network.teardown(PodNetworkRequest(sandbox_id=sandbox_id, netns_path=netns))
        except errors.NarwhalError as exc:
            log.warning("network teardown of %s: %s", sandbox_id[:12], exc.message)
        await ctx.netns_remove(netns)
    await namespaces.unpin(Path(metadata.ipc_path) if metadata.ipc_path else None,
                           Path(metadata.uts_path) if metadata.uts_path else None)
    _umount(ctx.sandbox_state(sandbox_id) / "shm")
    if metadata.infra:  # only an infra sandbox ever has a task (infra.start)
        await ctr_tasks.delete(ctx.client, sandbox_id)
    await ctr_containers.delete(ctx.client, sandbox_id)
    await rmtree(ctx.sandbox_root(sandbox_id), ctx.sandbox_state(sandbox_id))
    await release_shim(ctx, sandbox_id)


async def release_shim(ctx: RuntimeContext, sandbox_id: str) -> None:
    """The pod leaves its shim group; a group left without pods has its idle pre-started shim reaped."""
    emptied = ctx.shim_groups.release(sandbox_id)
    try:
        if ctx.shim_prestarter is not None:
            if emptied is not None:
                await ctx.shim_prestarter.reap(emptied)
            await ctx.shim_prestarter.reap(sandbox_id)  # a pod started with pods-per-shim 1 (then changed)
    finally:
        if emptied is not None:
            ctx.shim_groups.retired(emptied)


def _validate(config: SandboxConfig) -> None:
    for field_name in ("name", "uid", "namespace"):
        if not getattr(config, field_name):
            raise errors.InvalidArgument(f"sandbox config metadata.{field_name} must not be empty")
    if config.hostname:
        spec.check_hostname(config.hostname)  # refused before anything exists, not when the spec is built
    if config.namespace_options.network == NamespaceMode.TARGET or config.namespace_options.ipc == NamespaceMode.TARGET:
        raise errors.InvalidArgument("TARGET namespace mode is only valid for the PID namespace")
    ns = config.namespace_options
    spec_mounts.validate_sysctls(
        config.sysctls,
        network=Namespace.host() if ns.network == NamespaceMode.NODE else Namespace.new(),
        ipc=Namespace.host() if ns.ipc == NamespaceMode.NODE else Namespace.new(),
        uts=Namespace.host() if NamespaceMode.NODE in (ns.network, ns.uts) else Namespace.new(),
    )
    for key in ("kubernetes.io/ingress-bandwidth", "kubernetes.io/egress-bandwidth"):
        _bandwidth(config.annotations, key)
    for mapping in config.port_mappings:
        if not 0 < mapping.container_port < 65536 or not 0 <= mapping.host_port < 65536:
            raise errors.InvalidArgument(f"invalid port mapping {mapping}")


def _write_pod_files(root: Path, config: SandboxConfig, ip: str, extra_ips: list[str]) -> None:
    """hostname, hosts and resolv.conf, bind-mounted into every container of the pod."""
    hostname = container_spec.sandbox_hostname(config)
    etc_files.write_hostname(root / container_spec.HOSTNAME, hostname)
    etc_files.write_hosts(root / container_spec.HOSTS, hostname=hostname, ips=[i for i in (ip, *extra_ips) if i],
                          host_network=config.host_network)
    etc_files.write_resolv_conf(root / container_spec.RESOLV_CONF, config.dns)


_QUANTITY = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30,
             "Ti": 2**40}


def _bandwidth(annotations: dict[str, str], key: str) -> int:
    """kubelet's bandwidth annotations ("10M" = 10 Mbit/s) in bits per second; 0 when unset."""
    value = annotations.get(key, "").strip()
    if not value:
        return 0
    digits = value.rstrip("kMGTi")
    suffix = value[len(digits):]
    try:
        amount = float(digits)
    except ValueError:
        raise errors.InvalidArgument(f"annotation {key}: {value!r} is not a quantity") from None
    if suffix not in _QUANTITY or amount <= 0:
        raise errors.InvalidArgument(f"annotation {key}: {value!r} is not a positive quantity")
    return int(amount * _QUANTITY[suffix])


def _umount(path: Path) -> None:
    if path.exists():
        umount(path)
