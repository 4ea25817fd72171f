"""Who owns a Docker-domain sandbox, and where its netns and files are: the adapter between the
Docker runtime's sandboxes (and the engine, once wired) and the NetworkService."""
from __future__ import annotations

from typing import Protocol

from pkg import errors
from pkg.cni.model import Endpoint, PortMapping
from pkg.docker.networks.model import Owner
from pkg.runtime.sandboxes import SandboxService

# Set by pkg.docker.engine on each sandbox it runs: the Docker container that owns it.
ENGINE_LABEL = "io.narwhal.engine.container"


class _Named(Protocol):
    @property
    def name(self) -> str: ...


class ContainerNames(Protocol):
    def get(self, ref: str) -> _Named: ...


class DockerSandboxes:
    """OwnerLookup + SandboxLookup over the Docker domain's SandboxService.

    The container ID comes from the engine's label on the sandbox; the name from the engine when
    given (it follows renames), else from the sandbox config (the name at create)."""

    def __init__(self, sandboxes: SandboxService, engine: ContainerNames | None = None) -> None:
        self.sandboxes = sandboxes
        self.engine = engine

    def owner(self, sandbox_id: str, hint: Endpoint | None = None) -> Owner | None:
        found = self.sandboxes.ctx.sandboxes.find(sandbox_id)
        if found is None:
            # Still being made (not in the store before its network is up): the engine runs each sandbox
            # as pod uid = container ID, pod name = container name, and the endpoint remembers them.
            if hint is not None and hint.pod_uid and sandbox_id in self.sandboxes.creating:
                return Owner(hint.pod_uid, hint.pod_name)
            return None
        config = found[0].config
        container_id = config.labels.get(ENGINE_LABEL) or sandbox_id
        name = config.name
        if self.engine is not None:
            try:
                name = self.engine.get(container_id).name
            except errors.NotFound:
                pass
        return Owner(container_id, name.lstrip("/"))

    def netns_and_dir(self, sandbox_id: str) -> tuple[str, str]:
        metadata, _ = self.sandboxes.get(sandbox_id)
        return metadata.netns_path, metadata.sandbox_dir

    def dns_servers(self, sandbox_id: str) -> tuple[str, ...]:
        found = self.sandboxes.ctx.sandboxes.find(sandbox_id)
        dns = found[0].config.dns if found is not None else None
        return tuple(dns.servers) if dns is not None else ()

    def port_mappings(self, sandbox_id: str) -> tuple[PortMapping, ...]:
        found = self.sandboxes.ctx.sandboxes.find(sandbox_id)
        return tuple(found[0].config.port_mappings) if found is not None else ()
