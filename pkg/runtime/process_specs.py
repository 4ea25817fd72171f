"""The ``process`` of each container's OCI spec, kept in memory for exec.

Every exec (CRI ExecSync, the streaming server's exec, Docker's exec and health checks) starts from the
container's own process spec.  Fetching the whole spec from containerd and parsing it on every exec was a
round trip per exec (issue 21); a container's process never changes after create (an update edits
``linux.resources`` only), so it is read once, kept as JSON text (each caller gets its own parsed copy to
edit) and forgotten when the container is removed.  After a narwhald restart it is read again on first use.
"""
from __future__ import annotations

import json
from typing import Any

from pkg import errors
from pkg.containerd import containers as ctr_containers
from pkg.containerd.client import Client


class ProcessSpecs:
    def __init__(self) -> None:
        self._text: dict[str, str] = {}

    def put(self, container_id: str, spec: dict[str, Any]) -> None:
        """The spec create just wrote (so the first exec needs no round trip either)."""
        process = spec.get("process")
        if process:
            self._text[container_id] = json.dumps(process)

    async def get(self, client: Client, container_id: str) -> dict[str, Any]:
        """A fresh copy of the container's process spec (FailedPrecondition when it has none)."""
        text = self._text.get(container_id)
        if text is None:
            raw = await ctr_containers.spec_bytes(client, container_id, what=f"container {container_id}")
            try:
                process = json.loads(raw).get("process")
            except (ValueError, AttributeError):
                raise errors.FailedPrecondition(f"container {container_id} has no valid OCI spec") from None
            if not isinstance(process, dict) or not process:
                raise errors.FailedPrecondition("container spec has no process")
            text = json.dumps(process)
            self._text[container_id] = text
        value: dict[str, Any] = json.loads(text)
        return value

    def forget(self, container_id: str) -> None:
        self._text.pop(container_id, None)
