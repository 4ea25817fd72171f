"""This node's part in a swarm: init/leave, the etcd it owns or uses, the manager and agent it runs.

``Cluster`` is the Docker domain's swarm backend (moby's daemon/cluster.Cluster).  What says
"this node is in a swarm" is ``<root>/swarm/node.json`` (its node ID, role, addresses, whether
the store is external, a worker's managers); on a daemon restart that file brings the swarm back:
the private etcd member is adopted or restarted, the node is marked ready, the leader election,
orchestrator and agent start again and converge to what etcd holds.  Managers own an etcd member
and serve the join port (joinserver.py); workers are etcd clients of the managers' members only.
Joining, role changes and leaving a swarm that goes on are in roles.py; founding a swarm in
cluster_init.py; the swarm object as the API reads and updates it (and /info's, /_ping's view) in
cluster_object.py.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pkg import errors
from pkg.aio import cancel_tasks, create_guarded_task
from pkg.docker.swarm import cluster_init, keys, membership, objects, roles
from pkg.docker.swarm.addresses import default_address, endpoint, join_addr, split_addr
from pkg.docker.swarm.agent import Agent, unmount_files, update_with_retry
from pkg.docker.swarm.etcd import EtcdMember
from pkg.docker.swarm.executor import Executor
from pkg.docker.swarm.joinserver import JoinServer
from pkg.docker.swarm.mesh import Mesh, MeshSync
from pkg.docker.swarm.orchestrator import Orchestrator
from pkg.docker.swarm.store import Store
from pkg.docker.swarm.tls import TLSFiles

log = logging.getLogger(__name__)

Obj = dict[str, Any]

NOT_MANAGER = ('This node is not a swarm manager. Use "docker swarm init" or "docker swarm join" to connect this '
               "node to swarm and try again.")
ALREADY_IN_SWARM = ('This node is already part of a swarm. Use "docker swarm leave" to leave this swarm and join '
                    "another one.")
NOT_IN_SWARM = "This node is not part of a swarm"
LEAVE_LAST_MANAGER = ("You are attempting to leave the swarm on a node that is participating as a manager. "
                      "Removing the last manager erases all current state of the swarm. Use `--force` to ignore "
                      "this message. ")
SWARM_LOCKED = ('Swarm is encrypted and needs to be unlocked before it can be used. Please use "docker swarm unlock" '
                "to unlock it.")
LEAVE_LOCKED = "Swarm is encrypted and locked. Please unlock it first or use `--force` to ignore this message."
DEFAULT_PORT = 2377


@dataclass(frozen=True)
class NodeState:
    """What this node remembers of its swarm membership (``<root>/swarm/node.json``)."""

    node_id: str
    role: str
    advertise_addr: str  # host:port other nodes reach this one at
    listen_addr: str
    external: bool  # the store is the configured external etcd, not our own member
    managers: list[str] = field(default_factory=list)  # a worker's etcd endpoints: the managers' client URLs


@dataclass(frozen=True)
class InitRequest:
    listen_addr: str = "0.0.0.0:2377"
    advertise_addr: str = ""
    data_path_port: int = 0
    default_addr_pool: tuple[str, ...] = ()
    subnet_size: int = 0
    force_new_cluster: bool = False
    availability: str = "active"
    autolock: bool = False
    spec: Obj | None = None


class Cluster:
    def __init__(self, root: Path, state: Path, executor: Executor, *, external_endpoints: list[str],
                 engine_version: str, ncpu: int, mem_total: int, instance_id: str = "0",
                 external_tls: TLSFiles | None = None) -> None:
        self.root = root / "swarm"
        self.state_dir = state / "swarm"
        self.executor = executor
        self.external = [endpoint(e) for e in external_endpoints]
        self.external_tls = external_tls  # the config's CA, certificate and key for an external etcd (or None)
        self.certs = TLSFiles.under(self.root / "certificates")  # this node's certificate from the swarm's CA
        self.engine_version = engine_version
        self.resources = {"NanoCPUs": ncpu * 1_000_000_000, "MemoryBytes": mem_total}
        self.member = EtcdMember(self.root, self.state_dir)
        self.node: NodeState | None = None
        self.store: Store | None = None
        self.orchestrator: Orchestrator | None = None
        self.agent: Agent | None = None
        self.mesh = Mesh(instance_id)  # published ingress ports (mesh.py)
        self.mesh_sync: MeshSync | None = None
        self.ingress_changed: Callable[[], None] = lambda: None  # this node's ingress endpoint changed (overlay)
        self._agent_task: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._heartbeat: asyncio.Task[Any] | None = None  # also in _tasks; stopped first when the node leaves
        self._lock = asyncio.Lock()
        self.error = ""  # why a node in a swarm could not rejoin it (retried in the background)
        # secrets at rest (keys.py): the DEK once known, the unlock key (autolock: memory only), locked or not
        self.dek: bytes | None = None
        self._unlock_key = ""
        self.locked = False
        self._rejoin: asyncio.Task[None] | None = None
        self.join_server: JoinServer | None = None
        self._switching: asyncio.Task[None] | None = None  # a role change of this node (roles.py)

    @property
    def node_file(self) -> Path:
        return self.root / "node.json"

    def save_node(self, node: NodeState) -> None:
        """What brings this node back into its swarm on a restart (``node.json``), replaced atomically."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.node_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(node)))
        os.replace(tmp, self.node_file)

    # ---- state ----
    @property
    def active(self) -> bool:
        return self.node is not None and self.store is not None

    @property
    def is_manager(self) -> bool:
        return self.active and self.node is not None and self.node.role == "manager"

    def manager_store(self) -> Store:
        """The store, for calls only a manager serves (503 otherwise, as moby)."""
        if self.locked:
            raise errors.Unavailable(SWARM_LOCKED)
        if self.node is not None and self.store is None and self.error:
            raise errors.Unavailable(f"this node's swarm is not reachable: {self.error}")
        if not self.is_manager or self.store is None:
            raise errors.Unavailable(NOT_MANAGER)
        return self.store

    # ---- start / stop with the daemon ----
    async def start(self) -> None:
        """Bring back the swarm this node was in before the daemon (re)started."""
        try:
            node = NodeState(**json.loads(self.node_file.read_text()))
        except FileNotFoundError:
            return
        except (OSError, ValueError, TypeError) as exc:
            log.error("swarm: unreadable %s (%s): not rejoining", self.node_file, exc)
            return
        log.info("swarm: node %s rejoining its swarm", node.node_id)
        self.node = node  # in a swarm even while its store is unreachable: init is refused, leave works
        if not await self._try_rejoin(node):
            self._rejoin = create_guarded_task(lambda: self._rejoin_loop(node), "swarm-rejoin")

    async def _try_rejoin(self, node: NodeState) -> bool:
        """One attempt; an unreachable etcd must not keep the daemon from starting."""
        try:
            if await self._activate(node, connect_timeout=5.0):  # the daemon's start waits on this one
                await self._mark_node(node, "ready")
            else:
                log.warning("swarm: the swarm is autolocked: this node stays locked until `docker swarm unlock`")
        except errors.NarwhalError as exc:
            self.error = exc.message
            log.error("swarm: cannot rejoin the swarm yet: %s", exc.message)
            await self._deactivate(keep_node=True)
            return False
        self.error = ""
        return True

    async def _rejoin_loop(self, node: NodeState) -> None:
        while not await self._try_rejoin(node):
            await asyncio.sleep(5)

    async def close(self) -> None:
        """Daemon shutdown: stop our loops; etcd keeps running (adopted on the next start)."""
        if self._rejoin is not None:
            await cancel_tasks([self._rejoin])
        await self._deactivate(agent_timeout=20.0)

    async def _activate(self, node: NodeState, connect_timeout: float = 30.0, serve: bool = True) -> bool:
        """Connect to the store and run this node's loops; False (and nothing runs) when it is locked."""
        tls: TLSFiles | None = None
        if node.external:
            endpoints, tls = self.external, self.external_tls
            if not endpoints:
                raise errors.InvalidArgument("this node's swarm uses an external etcd, but swarm-etcd-endpoints "
                                             "is not set")
        elif node.role == "worker":
            endpoints = [endpoint(url) for url in node.managers]
            if not endpoints:
                raise errors.Internal("swarm: this worker knows no manager")
            if any(url.startswith("https://") for url in node.managers):
                tls = self.certs
        else:
            member = self.member.load()
            if member is None:
                raise errors.Internal(f"swarm: {self.member.config_path} is missing")
            await asyncio.to_thread(self.member.ensure_started, member)
            endpoints, tls = [member.local_endpoint], member.tls
        store = Store(endpoints, tls=tls)
        store.clustered = node.role == "worker" and not node.external
        await store.connect(connect_timeout)
        self.store, self.node = store, node
        cluster = await store.get_cluster()  # None while init creates it
        if cluster is not None:
            record = cluster.get("DEK")
            if record is None:  # a swarm made before secrets were sealed: give it a plain DEK
                self.dek = keys.new_dek()
                cluster["DEK"] = keys.dek_record(self.dek, "")
                await store.put_cluster(cluster, cluster["Version"]["Index"])
            elif keys.is_locked(record) and not self._unlock_key:
                self.locked = True
                return False
            else:
                self.dek = keys.open_dek(record, self._unlock_key)
        await self._run_loops(node, store, serve)
        return True

    async def _run_loops(self, node: NodeState, store: Store, serve: bool = True) -> None:
        self.agent = Agent(store, node.node_id, self.executor, self.state_dir, lambda: self.dek)
        self._agent_task = create_guarded_task(self.agent.run, "swarm-agent")
        if node.role == "manager":
            self.orchestrator = Orchestrator(store, node.node_id)
            self._tasks.append(create_guarded_task(self.orchestrator.run, "swarm-orchestrator", restart_delay=1.0))
        self.mesh_sync = MeshSync(store, node.node_id, self.executor, self.mesh, lambda: self.ingress_changed())
        self._tasks.append(create_guarded_task(self.mesh_sync.run, "swarm-mesh", restart_delay=1.0))
        self._tasks.append(create_guarded_task(self._watch, "swarm-watch", restart_delay=1.0))
        self._heartbeat = create_guarded_task(lambda: membership.heartbeat(store, node.node_id), "swarm-heartbeat",
                                              restart_delay=1.0)
        self._tasks.append(self._heartbeat)
        self._tasks.append(create_guarded_task(self._membership, "swarm-membership", restart_delay=1.0))
        if serve and node.role == "manager" and not node.external:
            await self._serve_joins(store, node)
        if not node.external:
            self._tasks.append(create_guarded_task(self._etcd_watchdog, "swarm-etcd-watchdog", restart_delay=1.0))

    async def _deactivate(self, keep_node: bool = False, agent_timeout: float = 60.0) -> None:
        node = self.node
        if self.agent is not None:
            await self.agent.stop(self._agent_task, agent_timeout)
        self._agent_task = None
        await cancel_tasks(self._tasks)
        self._tasks = []
        if self.join_server is not None:
            await self.join_server.stop()
            self.join_server = None
        if self.store is not None:
            await self.store.close()
        self.store, self.agent, self.orchestrator, self.node = None, None, None, node if keep_node else None
        self.mesh_sync = None
        if not keep_node:
            self.dek, self._unlock_key = None, ""
        self.locked = False

    async def _watch(self) -> None:
        """Every store change wakes the reconcilers (they also poll, so a lost watch only slows them)."""
        assert self.store is not None
        async for kind in self.store.changes():
            if self.orchestrator is not None and kind in ("services", "tasks", "nodes", "cluster"):
                self.orchestrator.wake()
            if self.agent is not None and kind in ("tasks", "services"):
                self.agent.wake()
            if self.mesh_sync is not None and kind in ("tasks", "services"):
                self.mesh_sync.wake()

    async def _serve_joins(self, store: Store, node: NodeState) -> None:
        """The join port; a port taken (another daemon on this host) only means no node can join here."""
        listen_host, listen_port = split_addr(node.listen_addr, DEFAULT_PORT)
        server = JoinServer(store, (listen_host, listen_port), split_addr(node.advertise_addr, DEFAULT_PORT)[0],
                            node.node_id, self.engine_version, lambda: self.dek)
        try:
            await server.start()
        except (OSError, errors.NarwhalError) as exc:
            log.warning("swarm: cannot serve joins on %s: %s", node.listen_addr, exc)
            return
        self.join_server = server

    async def _membership(self) -> None:
        """Every second: the leader's node-status pass; this node's role as the store says (roles.py)."""
        while True:
            store, node = self.store, self.node
            if store is None or node is None:
                return
            try:
                if self.orchestrator is not None and self.orchestrator.leading:
                    if await membership.node_status_pass(store):
                        self.orchestrator.wake()
                managers = [n for n in await store.list("nodes") if n["Spec"].get("Role") == "manager"]
                if node.role == "manager":
                    store.clustered = len(managers) > 1
                await roles.follow(self, store, node)
            except errors.Unavailable as exc:
                log.debug("swarm: membership pass: %s", exc.message)
            await asyncio.sleep(membership.PASS)

    async def _etcd_watchdog(self) -> None:
        while True:
            await asyncio.sleep(2.0)
            member = self.member.load()
            if member is not None:
                await self.member.restart_if_dead(member)

    async def _mark_node(self, node: NodeState, state: str) -> None:
        assert self.store is not None

        def change(obj: Obj) -> bool:
            obj["Status"]["State"] = state
            return True

        await update_with_retry(self.store, "nodes", node.node_id, change)

    # ---- init / leave ----
    async def init(self, req: InitRequest) -> str:
        async with self._lock:
            if self.node is not None:
                raise errors.Unavailable(ALREADY_IN_SWARM)
            listen_host, listen_port = split_addr(req.listen_addr or "0.0.0.0:2377", DEFAULT_PORT)
            advertise = req.advertise_addr or (listen_host if listen_host not in ("0.0.0.0", "::") else "")
            adv_host, adv_port = split_addr(advertise or default_address(), listen_port)
            node = NodeState(node_id=objects.new_id(), role="manager", advertise_addr=join_addr(adv_host, adv_port),
                             listen_addr=join_addr(listen_host, listen_port), external=bool(self.external))
            try:
                await cluster_init.create(self, node, req, adv_host)
            except BaseException:
                await self._deactivate()
                if not node.external:
                    await self.member.destroy()
                self.node_file.unlink(missing_ok=True)
                raise
            log.info("swarm: initialised; node %s is the manager", node.node_id)
            return node.node_id

    async def leave(self, force: bool) -> None:
        async with self._lock:
            node = self.node
            if node is None:
                raise errors.Unavailable(NOT_IN_SWARM)
            last_manager = True
            managers: list[Obj] = []
            if node.role == "manager" and self.store is not None:
                try:
                    managers = [n for n in await self.store.list("nodes") if n["Spec"].get("Role") == "manager"]
                    last_manager = len(managers) <= 1
                except errors.Unavailable:
                    if not force:
                        raise errors.Unavailable(roles.MANAGER_LEAVING + "Doing so may lose the consensus of your "
                                                 "cluster. " + roles.RESTORE) from None
            if self.locked and not force:
                raise errors.Unavailable(LEAVE_LOCKED)
            if node.role == "manager" and not force:
                raise errors.Unavailable(roles.leave_refusal(managers or [{}]))
            if self._rejoin is not None:
                await cancel_tasks([self._rejoin])
                self._rejoin = None
            store = self.store
            if node.external and store is not None:
                try:
                    if last_manager:
                        await store.delete_all()
                    else:
                        await store.delete("nodes", node.node_id)
                except errors.Unavailable as exc:  # forced: leave anyway, the records stay behind
                    log.warning("swarm: leaving without cleaning the external etcd: %s", exc.message)
            elif store is not None and not (node.role == "manager" and last_manager):
                if self.mesh_sync is not None:  # the swarm goes on: this node's ingress address goes back
                    await self.mesh_sync.release()
                await roles.leave_others(self, store, node)
            await self._deactivate()
            for container_id in self.executor.containers().values():
                await self.executor.remove(container_id)
            await asyncio.to_thread(unmount_files, self.state_dir)
            await self.mesh.remove()
            if not node.external:
                await self.member.destroy()
            self.node_file.unlink(missing_ok=True)
            log.info("swarm: node %s left the swarm", node.node_id)

    async def join(self, req: roles.JoinRequest) -> None:
        await roles.join(self, req)

    # ---- lock ----
    async def unlock(self, key: str) -> None:
        """``docker swarm unlock``: the key opens the wrapped DEK, then the node's loops start."""
        async with self._lock:
            if self.node is None or (not self.locked and self.store is None):
                raise errors.Unavailable(NOT_MANAGER)
            if not self.locked:
                raise errors.Conflict("swarm is not locked")
            assert self.store is not None
            keys.parse_unlock_key(key)
            cluster = await self.store.get_cluster()
            if cluster is None or not cluster.get("DEK"):
                raise errors.Internal("swarm: the cluster record has no data-encryption key")
            self.dek = keys.open_dek(cluster["DEK"], key)
            self._unlock_key = key if keys.is_locked(cluster["DEK"]) else ""
            self.locked = False
            await self._run_loops(self.node, self.store)
            await self._mark_node(self.node, "ready")
            log.info("swarm: unlocked")
