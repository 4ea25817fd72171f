"""A node's place in a multi-node swarm: joining, leaving as one of several, promotion and demotion.

- ``join``: the joiner's half of ``docker swarm join`` (join.py talks to the manager's join port): a
  manager's etcd member is planned on the advertise address first (the manager adds its peer URL with
  ``MemberAdd``), then started with ``--initial-cluster-state existing``; a worker keeps the managers'
  etcd client URLs and is a client only.
- ``follow``: each node watches its own record; when ``node promote``/``demote`` changed its role, the
  node itself makes the change — promotion: ``MemberAdd`` of its own peer URL, start the member, run
  the manager's loops; demotion: ``MemberRemove`` of itself (its member stops), wipe the member's data,
  become a client of the remaining managers.  Running task containers are adopted across the switch.
- ``leave_others``: a node leaving a swarm that goes on shows down at once; a manager's member goes first.
- ``leave_refusal``: moby's message for a manager leaving without ``--force`` (quorum math as Raft's:
  with ``r`` reachable and ``u`` unreachable managers, leaving loses quorum when ``r - 2 <= u``).
"""
from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from pkg import errors
from pkg.aio import cancel_tasks, create_guarded_task
from pkg.docker.swarm import ca, membership
from pkg.docker.swarm.addresses import default_address, endpoint, join_addr, split_addr
from pkg.docker.swarm.agent import update_with_retry
from pkg.docker.swarm.etcd import EtcdMember
from pkg.docker.swarm.join import fetch_ca, request_join, token_digest
from pkg.docker.swarm.joinserver import add_member
from pkg.docker.swarm.store import Store

if TYPE_CHECKING:
    from pkg.docker.swarm.cluster import Cluster, NodeState

log = logging.getLogger(__name__)

Obj = dict[str, Any]

MANAGER_LEAVING = "You are attempting to leave the swarm on a node that is participating as a manager. "
LAST_MANAGER = "Removing the last manager erases all current state of the swarm. Use `--force` to ignore this message. "
RESTORE = ("The only way to restore a swarm that has lost consensus is to reinitialize it with "
           "`--force-new-cluster`. Use `--force` to suppress this message.")


@dataclass(frozen=True)
class JoinRequest:
    remote_addrs: list[str]
    join_token: str
    listen_addr: str = "0.0.0.0:2377"
    advertise_addr: str = ""
    data_path_addr: str = ""
    availability: str = "active"


def leave_refusal(managers: list[Obj]) -> str:
    reachable = sum(1 for m in managers if (m.get("ManagerStatus") or {}).get("Reachability") == "reachable")
    reachable = max(reachable, 1)  # this node answers
    unreachable = len(managers) - reachable
    msg = MANAGER_LEAVING
    if reachable - 2 <= unreachable:
        if reachable == 1 and unreachable == 0:
            return msg + LAST_MANAGER
        msg += (f"Removing this node leaves {reachable - 1} managers out of {reachable + unreachable}. Without a "
                "Raft quorum your swarm will be inaccessible. ")
    return msg + RESTORE


async def join(cl: Cluster, req: JoinRequest) -> None:
    from pkg.docker.swarm.cluster import ALREADY_IN_SWARM, DEFAULT_PORT, NodeState

    async with cl._lock:
        if cl.node is not None:
            raise errors.Unavailable(ALREADY_IN_SWARM)
        if cl.external:
            raise errors.InvalidArgument("joining a swarm kept in an external etcd (swarm-etcd-endpoints) is not "
                                         "supported: every node would use that etcd directly")
        digest = token_digest(req.join_token)
        if not req.remote_addrs:
            raise errors.InvalidArgument("at least 1 RemoteAddr is required to join")
        remote = req.remote_addrs[0]
        listen_host, listen_port = split_addr(req.listen_addr or "0.0.0.0:2377", DEFAULT_PORT)
        advertise = req.advertise_addr or (listen_host if listen_host not in ("0.0.0.0", "::") else "")
        adv_host, adv_port = split_addr(advertise or default_address(), listen_port)
        plan = await asyncio.to_thread(EtcdMember.plan, "", adv_host, str(cl.certs.cert.parent))
        csr, key = await asyncio.to_thread(ca.new_csr, "joining")
        ca_pem = await fetch_ca(remote, digest)
        admission = await request_join(remote, ca_pem, {
            "token": req.join_token.strip(), "csr": csr.decode(), "advertise_addr": join_addr(adv_host, adv_port),
            "data_path_addr": req.data_path_addr, "peer_url": plan.peer_url, "availability": req.availability,
            "resources": cl.resources, "engine_version": cl.engine_version, "hostname": socket.gethostname()})
        node = NodeState(node_id=admission.node_id, role=admission.role,
                         advertise_addr=join_addr(adv_host, adv_port), listen_addr=join_addr(listen_host, listen_port),
                         external=False, managers=admission.managers if admission.role == "worker" else [])
        try:
            cl.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            await asyncio.to_thread(cl.certs.write, admission.ca_pem, admission.cert_pem, key)
            if admission.role == "manager":
                cl.member.save(replace(plan, name=node.node_id, initial_cluster=admission.initial_cluster,
                                       cluster_state="existing"))
            cl.save_node(node)
            await cl._activate(node, connect_timeout=60.0)
            await cl._mark_node(node, "ready")
        except BaseException:
            await cl._deactivate()
            await cl.member.destroy()
            cl.node_file.unlink(missing_ok=True)
            raise
        log.info("swarm: joined as %s %s", node.role, node.node_id)


async def follow(cl: Cluster, store: Store, node: NodeState) -> None:
    """Start a role change when this node's record asks for another role than it has."""
    record = await store.get("nodes", node.node_id)
    if record is None or node.external:
        return
    wanted = record["Spec"].get("Role")
    if wanted == node.role or wanted not in ("manager", "worker"):
        return
    if cl._switching is not None and not cl._switching.done():
        return
    cl._switching = create_guarded_task(lambda: _switch(cl, node, str(wanted)), "swarm-role-change")


async def _remove_own_member(cl: Cluster, store: Store, node_id: str, others: list[str]) -> None:
    """``MemberRemove`` of this node's member, asked of another member: the removed one stops at once and
    may never answer its own removal (then this node, whose store is that member, was stuck a manager)."""
    if not others:
        await store.remove_member(node_id)
        return
    tls = cl.certs if any(u.startswith("https://") for u in others) else None
    elsewhere = Store([endpoint(u) for u in others], tls=tls)
    try:
        await elsewhere.connect(15.0)
        await elsewhere.remove_member(node_id)
    finally:
        await elsewhere.close()


async def _switch(cl: Cluster, node: NodeState, role: str) -> None:
    store = cl.store
    assert store is not None
    log.info("swarm: node %s becomes a %s", node.node_id, role)
    if role == "manager":
        host = split_addr(node.advertise_addr, 2377)[0]
        # the node's certificate (issued at join, whatever the role) serves its member's peers and clients
        tls_dir = str(cl.certs.cert.parent) if cl.certs.exists() else ""
        plan = await asyncio.to_thread(EtcdMember.plan, node.node_id, host, tls_dir)
        await add_member(store, plan.peer_url)
        members = await store.members()
        initial = ",".join(f"{m['name'] or node.node_id}={m['peer_urls'][0]}" for m in members if m["peer_urls"])
        cl.member.save(replace(plan, initial_cluster=initial, cluster_state="existing"))
        new = replace(node, role="manager", managers=[])
    else:
        members = await store.members()
        urls = [u for m in members if m["name"] != node.node_id for u in m["client_urls"]]
        await _remove_own_member(cl, store, node.node_id, urls)
        new = replace(node, role="worker", managers=urls)
    async with cl._lock:
        if cl.node != node:
            return  # left or changed meanwhile
        await cl._deactivate()
        if role == "worker":
            certs = await asyncio.to_thread(cl.certs.read)  # the node keeps its certificate: a client now
            await cl.member.destroy()  # its data belongs to a cluster it is no member of any more
            cl.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            if certs is not None:
                await asyncio.to_thread(cl.certs.write, *certs)
        cl.save_node(new)
        try:
            await cl._activate(new, connect_timeout=60.0)
            await cl._mark_node(new, "ready")
        except errors.NarwhalError as exc:
            log.error("swarm: role change to %s: %s (retrying in the background)", role, exc.message)
            cl.node = new
            cl.error = exc.message
            cl._rejoin = create_guarded_task(lambda: cl._rejoin_loop(new), "swarm-rejoin")


async def leave_others(cl: Cluster, store: Store, node: NodeState) -> None:
    """Leaving a swarm that goes on: the node shows down at once (its record stays until ``node rm``, as
    moby's); a manager's etcd member is removed first so the others' quorum no longer counts it."""
    def down(obj: Obj) -> bool:
        obj["Status"].update({"State": "down", "Message": membership.LEFT})
        if "ManagerStatus" in obj:
            obj["ManagerStatus"]["Reachability"] = "unreachable"
        return True

    try:
        # Not alive first: while its alive key lives (until its lease runs out, up to a heartbeat period),
        # the leader's status pass would write the node back to ready after the down below, and `docker
        # node rm` of a node seen down would fail with "is not down" (test_leave_rm_bad_tokens_and_rejoin).
        if cl._heartbeat is not None:
            await cancel_tasks([cl._heartbeat])
        await asyncio.wait_for(store.not_alive(node.node_id), 10)
        await asyncio.wait_for(update_with_retry(store, "nodes", node.node_id, down), 10)
        if node.role == "manager":
            await asyncio.wait_for(store.remove_member(node.node_id), 10)
    except (errors.NarwhalError, TimeoutError) as exc:
        log.warning("swarm: leaving without telling the others: %s", exc)
