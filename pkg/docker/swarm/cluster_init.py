"""A new swarm (``docker swarm init``): its root CA, the first etcd member, the cluster record, the first node.

Separate from pkg.docker.swarm.cluster because founding a swarm is done once and has a job of its own: make the
root CA and this node's certificate (the member serves https to holders of the CA's certificates only), create
the etcd member (or check that a configured external etcd holds no swarm yet), then seal a fresh DEK (under an
unlock key with autolock) into the cluster record and write the first node.  ``Cluster.init`` calls it under
its lock and undoes everything when it raises.
"""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from pkg import errors
from pkg.docker.swarm import ca, keys, objects
from pkg.docker.swarm.joinserver import ca_record
from pkg.docker.swarm.store import Store

if TYPE_CHECKING:
    from pkg.docker.swarm.cluster import Cluster, InitRequest, NodeState


async def create(cl: Cluster, node: NodeState, req: InitRequest, peer_host: str) -> None:
    """Found the swarm ``req`` asks for with ``node`` its first manager, reachable at ``peer_host``."""
    spec = objects.merge_spec(objects.default_cluster_spec(), req.spec)
    if req.autolock:
        spec["EncryptionConfig"] = {"AutoLockManagers": True}
    root = await asyncio.to_thread(ca.new_root)
    cluster = objects.new_cluster(
        spec, ca.der(root.cert_pem), default_addr_pool=list(req.default_addr_pool) or ["10.0.0.0/8"],
        subnet_size=req.subnet_size or 24, data_path_port=req.data_path_port or 4789)
    if not node.external:
        # the member serves https to holders of the CA's certificates only: this node's comes first
        own = await asyncio.to_thread(ca.issue, root, node.node_id, "manager", cluster["ID"], [peer_host])
        cl.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        await asyncio.to_thread(cl.certs.write, root.cert_pem, own.cert_pem, own.key_pem)
        await asyncio.to_thread(cl.member.create, node.node_id, peer_host, str(cl.certs.cert.parent))
    else:
        probe = Store(cl.external, tls=cl.external_tls)
        await probe.connect()
        try:
            if await probe.get_cluster() is not None:
                raise errors.FailedPrecondition(
                    "the external etcd (swarm-etcd-endpoints) already holds a swarm: joining it is not "
                    "supported yet")
        finally:
            await probe.close()
    cl.save_node(node)
    await cl._activate(node, serve=False)
    assert cl.store is not None
    cl.dek = keys.new_dek()
    await cl.store.put_raw("ca", ca_record(root, cl.dek))
    autolock = bool(spec.get("EncryptionConfig", {}).get("AutoLockManagers"))  # the flag or the spec's
    cl._unlock_key = keys.new_unlock_key() if autolock else ""
    cluster["DEK"] = keys.dek_record(cl.dek, cl._unlock_key)
    await cl.store.put_cluster(cluster, None)
    await cl.store.create("nodes", objects.new_node(node.node_id, "manager", req.availability or "active",
                                                    node.advertise_addr, cl.resources, cl.engine_version))
    if not node.external:
        await cl._serve_joins(cl.store, node)
