"""Read-only cgroup access for stats, OOM detection and leak cleanup (v1, hybrid and v2 hosts)."""
