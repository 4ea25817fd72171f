"""Swarm mode on etcd: the cluster's desired state in etcd, manager reconcilers, the node agent (docs/swarm.md)."""
