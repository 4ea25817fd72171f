"""What the sandbox and container services share: config, containerd, stores, and narrow
interfaces to networking and images (Protocols, so unit tests can fake them)."""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from pkg.cni.model import PodNetworkRequest, PodNetworkStatus
from pkg.config import Config
from pkg.containerd.client import Client
from pkg.events import DomainEvents, EventBus
from pkg.images.model import Image
from pkg.logs.service_client import LogService
from pkg.model.container import ContainerMetadata, ContainerStatus
from pkg.model.sandbox import SandboxMetadata, SandboxStatus
from pkg.runtime.exec_exits import ExecExits
from pkg.runtime.image_files import ImageFilesCache
from pkg.runtime.process_specs import ProcessSpecs
from pkg.runtime.shim_groups import ShimGroups
from pkg.runtime.shim_prestart import ShimPrestarter
from pkg.runtime.stdin import StdinKeeper
from pkg.store import Store


class PodNetwork(Protocol):
    async def setup(self, req: PodNetworkRequest) -> PodNetworkStatus: ...

    async def teardown(self, req: PodNetworkRequest) -> None: ...


class Images(Protocol):
    async def get(self, ref_or_id: str) -> Image: ...


NetnsCreate = Callable[[Path], Awaitable[Path]]
NetnsRemove = Callable[[Path], Awaitable[None]]


@dataclass
class RuntimeContext:
    cfg: Config
    client: Client
    network: PodNetwork
    netns_create: NetnsCreate
    netns_remove: NetnsRemove
    images: Images
    events: DomainEvents = field(default_factory=lambda: EventBus().domain(""))  # the daemon's bus, tagged
    stdin: StdinKeeper = field(default_factory=StdinKeeper)
    sandboxes: Store[SandboxMetadata, SandboxStatus] = field(default_factory=lambda: Store("sandbox"))
    containers: Store[ContainerMetadata, ContainerStatus] = field(default_factory=lambda: Store("container"))
    logger: Path | None = None  # narwhal-logger for the shim (pkg.logs.binary.write_launcher); None: the script
    log_service: LogService | None = None  # log-service: the instance's one log copier (pkg.logs.service)
    # A runtime "domain" (one per front end) has its own containerd namespace (via ``client``), its own
    # dirs and cgroup parent, so recovery and GC of one never touch the other's objects.
    domain: str = ""
    shim_groups: ShimGroups = field(default_factory=ShimGroups)  # pods-per-shim (pkg.runtime.shim_groups)
    process_specs: ProcessSpecs = field(default_factory=ProcessSpecs)  # what every exec starts from
    image_files: ImageFilesCache = field(default_factory=ImageFilesCache)  # users resolve without a view
    exec_exits: ExecExits = field(default_factory=ExecExits)  # execs' exits from the ExitMonitor's event stream
    # The pod's shim started in RunPodSandbox (pkg.runtime.shim_prestart); None: containerd starts it at the
    # first Tasks.Create (a containerd narwhald does not own, or a named domain).
    shim_prestarter: ShimPrestarter | None = None

    @property
    def root(self) -> Path:
        """This domain's persistent dir (cfg.root for CRI, cfg.root/<domain> otherwise)."""
        return self.cfg.root / self.domain if self.domain else self.cfg.root

    @property
    def state(self) -> Path:
        """This domain's volatile dir (cfg.state for CRI, cfg.state/<domain> otherwise)."""
        return self.cfg.state / self.domain if self.domain else self.cfg.state

    def shim_group(self, sandbox_id: str) -> dict[str, str]:
        """The shim-group annotation for a spec of this pod: ``pods-per-shim`` groups the CRI domain's pods
        only (a named domain's container is a pod of its own, each in its own shim)."""
        return self.shim_groups.annotations(sandbox_id, 1 if self.domain else self.cfg.pods_per_shim)

    def shim_group_name(self, sandbox_id: str) -> str:
        """The runc v2 shim group of the pod's tasks: its ``pods-per-shim`` group, else its sandbox ID (the
        ``io.kubernetes.cri.sandbox-id`` annotation every spec of the pod carries)."""
        return self.shim_groups.group_of(sandbox_id) or sandbox_id

    @property
    def exec_dir(self) -> Path:
        """Fifos of exec processes (reaped at start-up if a previous narwhald left them)."""
        return self.state / "exec"

    # ---- per-instance locations ----
    def sandbox_root(self, sandbox_id: str) -> Path:
        """Persistent files of a sandbox (status, hostname, hosts, resolv.conf)."""
        return self.root / "sandboxes" / sandbox_id

    def sandbox_state(self, sandbox_id: str) -> Path:
        """Volatile files of a sandbox (namespace pins, shm)."""
        return self.state / "sandboxes" / sandbox_id

    def netns_path(self, sandbox_id: str) -> Path:
        return self.cfg.netns_dir / sandbox_id

    def container_root(self, container_id: str) -> Path:
        return self.root / "containers" / container_id

    def container_state(self, container_id: str) -> Path:
        return self.state / "containers" / container_id

    @property
    def default_cgroup_parent(self) -> str:
        suffix = f"-{self.domain}" if self.domain else ""
        return f"/narwhal-{self.cfg.instance_id}{suffix}"
