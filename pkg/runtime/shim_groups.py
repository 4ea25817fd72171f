"""``pods-per-shim``: several pods' containers served by one runc v2 shim process.

containerd's runc v2 shim decides at ``start`` which shim serves a container: the value of the spec
annotation ``io.containerd.runc.v2.group`` if there is one, else ``io.kubernetes.cri.sandbox-id``,
names the shim (its socket is derived from the namespace and that name), so every container with the
same value goes to the one process (containerd's cmd/containerd-shim-runc-v2/manager).  Without the
group annotation that is one shim per pod, which is what containerd's CRI runs (``pods-per-shim: 1``).
With ``pods-per-shim: N`` above 1 (10 by default) a pod is given a group the first time one of its containers (or its
infra task) is specified, the lowest-numbered group with fewer than N pods, and keeps it until it is
removed.  A shim costs ~3 MiB of PSS with one pod in it and well under 1 MiB more per further pod
(docs/benchmarks.md).

Blast radius: a group's shim is the parent (subreaper) of all of its pods' container processes and
holds their stdio, so one shim crash ends the containers of up to N pods, not one.

Restarts: the groups live in the containers' specs, which containerd keeps, so recovery rebuilds the
membership from them (``adopt``); the shims themselves are containerd's and survive narwhald.
"""
from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

GROUP_ANNOTATION = "io.containerd.runc.v2.group"
# Not a container ID (those are 64 hex digits), so a group's shim never shares a name with a container's.
PREFIX = "narwhal-shim-"


class ShimGroups:
    """Which group each pod's containers carry in their spec; thread-safe (infra specs are built in a
    worker thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._group_of: dict[str, str] = {}  # sandbox id -> group
        self._members: dict[str, set[str]] = {}  # group -> sandbox ids
        self._retiring: set[str] = set()  # emptied groups whose idle pre-started shim is being reaped

    def annotations(self, sandbox_id: str, pods_per_shim: int) -> dict[str, str]:
        """The annotation to add to a spec of this pod (none when pods are not grouped)."""
        if pods_per_shim <= 1:
            with self._lock:  # a pod grouped before a reload that turned grouping off keeps its shim
                group = self._group_of.get(sandbox_id)
            return {GROUP_ANNOTATION: group} if group else {}
        return {GROUP_ANNOTATION: self.assign(sandbox_id, pods_per_shim)}

    def assign(self, sandbox_id: str, pods_per_shim: int) -> str:
        """The pod's group, choosing one with room (the lowest-numbered) the first time."""
        with self._lock:
            group = self._group_of.get(sandbox_id)
            if group is None:
                group = next((g for g in sorted(self._members, key=_number)
                              if len(self._members[g]) < pods_per_shim), None)
                if group is None:
                    used = {_number(g) for g in (*self._members, *self._retiring)}
                    group = f"{PREFIX}{next(n for n in range(len(used) + 1) if n not in used)}"
                self._join(sandbox_id, group)
            return group

    def adopt(self, sandbox_id: str, spec: Mapping[str, Any]) -> None:
        """Recovery: the group a recovered container's (or infra task's) spec names, if any."""
        annotations = spec.get("annotations") or {}
        group = annotations.get(GROUP_ANNOTATION) if isinstance(annotations, Mapping) else None
        if isinstance(group, str) and group.startswith(PREFIX):
            with self._lock:
                if sandbox_id not in self._group_of:
                    self._join(sandbox_id, group)

    def release(self, sandbox_id: str) -> str | None:
        """The pod is removed: its place in the group is free.  Returns the group if it is now empty: it is
        then *retiring* (never handed out) until :meth:`retired`, so its idle shim can be reaped without a
        new pod's first task reaching that shim in between."""
        with self._lock:
            group = self._group_of.pop(sandbox_id, None)
            if group is not None:
                members = self._members[group]
                members.discard(sandbox_id)
                if not members:
                    del self._members[group]
                    self._retiring.add(group)
                    return group
            return None

    def retired(self, group: str) -> None:
        """The emptied group's shim is gone: the group may be handed out again."""
        with self._lock:
            self._retiring.discard(group)

    def has_members(self, group: str) -> bool:
        with self._lock:
            return bool(self._members.get(group))

    def group_of(self, sandbox_id: str) -> str | None:
        with self._lock:
            return self._group_of.get(sandbox_id)

    def _join(self, sandbox_id: str, group: str) -> None:
        self._group_of[sandbox_id] = group
        self._members.setdefault(group, set()).add(sandbox_id)


def _number(group: str) -> int:
    suffix = group.removeprefix(PREFIX)
    return int(suffix) if suffix.isdigit() else -1
