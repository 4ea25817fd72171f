"""Daemon configuration: typed dataclasses, YAML loading and validation.

Every flag of ``narwhald`` is also a key of the YAML file given by
``--config`` (the flag's name without the leading dashes, e.g.
``cri-socket: /run/narwhal/cri.sock``).  Precedence: defaults < file < flags.
Unknown keys and bad values are refused with a message naming the key.
"""
from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pkg.config import values
from pkg.config.values import LOG_FORMATS, LOG_LEVELS, parse_address
from pkg.errors import InvalidArgument

__all__ = ["CONVERTERS", "LOG_FORMATS", "LOG_LEVELS", "Config", "RegistryConfig", "build", "load_file",
           "parse_address"]


@dataclass(frozen=True)
class RegistryConfig:
    """Per-host mirrors (tried in order before the upstream) and insecure hosts."""

    mirrors: dict[str, list[str]] = field(default_factory=dict)
    insecure: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Config:
    root: Path = Path("/var/lib/narwhal")
    state: Path = Path("/run/narwhal")
    cri_socket: Path = Path("/run/narwhal/cri.sock")
    docker_socket: Path = Path("/run/narwhal/docker.sock")
    metrics_address: str = "127.0.0.1:9323"
    streaming_address: str = "127.0.0.1:0"  # Exec/Attach/PortForward URLs; port 0 = pick a free one
    containerd_address: Path | None = None
    cni_bin_dir: list[Path] = field(default_factory=lambda: [Path("/usr/lib/cni"), Path("/opt/cni/bin")])
    cni_conf_dir: Path = Path("/etc/cni/net.d")
    log_level: str = "info"
    log_format: str = "text"  # or json: one object per line (pkg.logsetup)
    # Not flags in DEVELOPERS.md, but settable in the file (and as flags too).
    containerd_namespace: str = "narwhal"
    stop_containerd_on_exit: bool = False
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    max_concurrent_downloads: int = 3  # layers fetched in parallel per pull (and blobs per push)
    # Pod networking (the default CNI network Narwhal writes; plugin calls).
    pod_subnet: list[str] = field(default_factory=list)  # empty: a per-instance /24 of 10.123.0.0/16
    cni_bridge: str = ""  # empty: nw-<instance_id>
    cni_timeout: float = 60.0  # seconds per plugin call
    # A pull's blob stream that delivers no byte for this long is cut (kubelet's --image-pull-progress-deadline,
    # containerd's image_pull_progress_timeout): it resumes while it makes progress, else the pull fails.
    image_pull_progress_timeout: float = 60.0
    # CRI runtime handlers: name -> the runc-compatible binary containerd's runc v2 shim runs.
    runtime_handlers: dict[str, str] = field(default_factory=lambda: {"runc": "runc"})
    # Docker API: the oldest API version served (clients negotiate down to what /_ping advertises).
    docker_min_api_version: str = "1.40"
    # Swarm mode: an external etcd cluster ("host:port" or "http://host:port") instead of a private member.
    swarm_etcd_endpoints: list[str] = field(default_factory=list)
    # ... and the client TLS it needs when its endpoints are https://: the CA to trust, the certificate and key
    # narwhald presents (every node uses the same files' paths; docs/swarm.md).
    swarm_etcd_ca_file: Path | None = None
    swarm_etcd_cert_file: Path | None = None
    swarm_etcd_key_file: Path | None = None
    # One node, two faces (docs/kubernetes-node.md): the Docker API also shows kubelet's containers, with
    # dockershim's names; off by default, so Docker clients see only their own objects unless asked.
    docker_shows_pods: bool = False
    # With docker-shows-pods: `docker stop/kill/rm` may act on kubelet's containers (as with dockershim).
    docker_may_stop_pods: bool = False
    # Every image name the Docker API makes (pull, load, build, commit, tag) is given to the CRI image store too,
    # its content linked, not copied: a pod can use `docker build -t app:dev` with imagePullPolicy Never.
    docker_images_for_pods: bool = False
    # CRI pods served by one runc v2 shim process (pkg.runtime.shim_groups): 1 is a shim per pod, as
    # containerd's CRI runs them; more saves a shim's memory per pod, and one shim crash ends its group's pods.
    # 10 by default (issue 21: memory per pod; 50 per shim timed out removing 50 pods at once on a loaded host).
    pods_per_shim: int = 10
    # Container output copied by one long-lived log service per instance from fifo stdio (pkg.logs.service)
    # rather than by a narwhal-logger process per container (issue 21: a Python process each, ~3 MiB).
    log_service: bool = True
    # The pod's runc v2 shim started during RunPodSandbox, beside the CNI chain (pkg.runtime.shim_prestart), as
    # containerd's CRI has it running by then (for the pause container): StartContainer skips its start-up.
    shim_prestart: bool = True
    # Each layer applied while it streams in, beside its Content.Write, into a staging dir renamed into the
    # snapshot (pkg.images.stream_unpack), instead of containerd's Diff.Apply once the blob is in; only with the
    # overlayfs snapshotter of a containerd narwhald runs itself.  Anything it cannot do exactly: Diff.Apply.
    # On by default (issue 21: PullImage 1.33x-2.01x -> 1.02x-1.14x of containerd's CRI, docs/benchmarks.md).
    stream_unpack: bool = True
    # GOGC of the containerd narwhald starts (and so of the runc v2 shims it starts, which inherit its
    # environment): a Go heap grows to (100 + GOGC)% of what is live before a collection; lower trades GC CPU
    # for memory (issue 21, docs/benchmarks.md "containerd's GOGC").  100 is Go's own default.
    containerd_gogc: int = 100
    # The task calls containerd's task service only passes through (a task's Start; an exec process's Exec,
    # Start, Wait, Kill, CloseIO, ResizePty, Delete) made as ttrpc calls to the task's runc v2 shim
    # (pkg.containerd.shims); only with a containerd narwhald runs itself.  false: every call through
    # containerd (issue 21, docs/benchmarks.md "Task calls straight to the shim").
    shim_direct: bool = True
    # A blob's bytes written by narwhald into the data file of its ingest in containerd's content store and
    # hashed as they go, the verified file linked into the store and committed as content containerd holds,
    # instead of relayed to it as Content.Write messages (pkg.images.ingest_direct); only with a containerd
    # narwhald runs itself (issue 21, docs/benchmarks.md "Blob bytes written into the ingest" and "Blobs hashed
    # by narwhald").  false: every byte through Content.Write.
    ingest_direct: bool = True

    # ---- derived locations; one place so every module agrees ----
    @property
    def owns_containerd(self) -> bool:
        return self.containerd_address is None

    @property
    def containerd_root(self) -> Path:
        return self.root / "containerd"

    @property
    def staging_root(self) -> Path:
        """stream-unpack's staging dirs: beside the snapshotter's dir (renamed into snapshots, same filesystem)."""
        return self.containerd_root / "narwhal-unpack"

    @property
    def containerd_state(self) -> Path:
        return self.state / "containerd"

    @property
    def shim_state(self) -> Path | None:
        """Where the tasks' shim addresses are, for shim-direct (None: every task call through containerd)."""
        return self.containerd_state if self.shim_direct and self.owns_containerd else None

    @property
    def content_root(self) -> Path | None:
        """containerd's content store, for ingest-direct (None: every blob byte through Content.Write)."""
        return self.containerd_root / "io.containerd.content.v1.content" if self.ingest_direct and \
            self.owns_containerd else None

    @property
    def containerd_socket(self) -> Path:
        return self.containerd_address or self.containerd_state / "containerd.sock"

    @property
    def docker_namespace(self) -> str:
        """containerd namespace of the Docker domain (CRI's is ``containerd_namespace``)."""
        return f"{self.containerd_namespace}-docker"

    @property
    def runc_root(self) -> Path:
        """runc's state dir, private to this instance (passed as the runc v2 shim's Root option)."""
        return self.state / "runc"

    @property
    def log_service_dir(self) -> Path:
        """The log service's state: its registrations, control socket, pid file and log."""
        return self.state / "logs"

    @property
    def netns_dir(self) -> Path:
        """Where sandbox network namespaces are pinned: ``netns_dir / <sandbox_id>``."""
        return self.state / "netns"

    @property
    def cni_state_dir(self) -> Path:
        """This instance's CNI state: attachment cache and host-local IPAM allocations."""
        return self.state / "cni"

    @property
    def instance_id(self) -> str:
        """Short stable id of this instance, for names that live in host-global spaces
        (bridges, iptables chains, cgroup parents)."""
        return hashlib.sha256(str(self.root.resolve()).encode()).hexdigest()[:8]

    def metrics_host_port(self) -> tuple[str, int]:
        return values.parse_address(self.metrics_address, "metrics-address")


def _registry(key: str, value: Any) -> RegistryConfig:
    if not isinstance(value, dict):
        raise InvalidArgument(f"{key}: expected a mapping with 'mirrors' and/or 'insecure'")
    unknown = set(value) - {"mirrors", "insecure"}
    if unknown:
        raise InvalidArgument(f"{key}: unknown key(s) {', '.join(sorted(unknown))}")
    mirrors = value.get("mirrors") or {}
    if not isinstance(mirrors, dict) or not all(
        isinstance(h, str) and isinstance(m, list) and all(isinstance(u, str) and u for u in m)
        for h, m in mirrors.items()
    ):
        raise InvalidArgument(f"{key}.mirrors: expected a mapping of registry host to a list of URLs")
    for host, urls in mirrors.items():
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise InvalidArgument(f"{key}.mirrors.{host}: {url!r} must start with http:// or https://")
    insecure = value.get("insecure") or []
    if not isinstance(insecure, list) or not all(isinstance(h, str) and h for h in insecure):
        raise InvalidArgument(f"{key}.insecure: expected a list of registry hosts")
    return RegistryConfig(mirrors={h: list(m) for h, m in mirrors.items()}, insecure=list(insecure))


CONVERTERS: dict[str, Any] = {
    "root": values.abs_path,
    "state": values.abs_path,
    "cri-socket": values.abs_path,
    "docker-socket": values.abs_path,
    "metrics-address": values.address,
    "streaming-address": values.address,
    "containerd-address": values.abs_path,
    "cni-bin-dir": values.path_list,
    "cni-conf-dir": values.abs_path,
    "log-level": values.log_level,
    "log-format": values.log_format,
    "containerd-namespace": values.identifier,
    "stop-containerd-on-exit": values.boolean,
    "registry": _registry,
    "max-concurrent-downloads": values.whole_number(1, 64),
    "pod-subnet": values.subnets,
    "cni-bridge": values.ifname,
    "cni-timeout": values.seconds,
    "image-pull-progress-timeout": values.seconds,
    "runtime-handlers": values.runtime_handlers,
    "docker-min-api-version": values.api_version,
    "swarm-etcd-endpoints": values.endpoints,
    "swarm-etcd-ca-file": values.abs_path,
    "swarm-etcd-cert-file": values.abs_path,
    "swarm-etcd-key-file": values.abs_path,
    "docker-shows-pods": values.boolean,
    "docker-may-stop-pods": values.boolean,
    "docker-images-for-pods": values.boolean,
    "pods-per-shim": values.whole_number(1, 64),
    "log-service": values.boolean,
    "shim-prestart": values.boolean,
    "stream-unpack": values.boolean,
    "containerd-gogc": values.whole_number(10, 1000, " (Go's GOGC percent)"),
    "shim-direct": values.boolean,
    "ingest-direct": values.boolean,
}


def load_file(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise InvalidArgument(f"config {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise InvalidArgument(f"config {path}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InvalidArgument(f"config {path}: expected a mapping of option names to values")
    return data


def _check_swarm_etcd_tls(config: Config) -> None:
    """https:// endpoints need all three files; the files without an https:// endpoint mean nothing."""
    files = (config.swarm_etcd_ca_file, config.swarm_etcd_cert_file, config.swarm_etcd_key_file)
    https = [e for e in config.swarm_etcd_endpoints if e.startswith("https://")]
    if https and None in files:
        raise InvalidArgument("swarm-etcd-endpoints: https:// endpoints need swarm-etcd-ca-file, "
                              "swarm-etcd-cert-file and swarm-etcd-key-file")
    if https and len(https) != len(config.swarm_etcd_endpoints):
        raise InvalidArgument("swarm-etcd-endpoints: mixing http:// and https:// endpoints is not supported")
    if any(files) and not https:
        raise InvalidArgument("swarm-etcd-ca-file/cert-file/key-file need https:// swarm-etcd-endpoints")


def build(file_values: dict[str, Any], flag_values: dict[str, Any]) -> Config:
    """Merge file and flag values (flags win) over the defaults, validating each key."""
    merged: dict[str, Any] = {}
    for source in (file_values, flag_values):
        for key, value in source.items():
            if value is None:
                continue
            if key not in CONVERTERS:
                known = ", ".join(sorted(CONVERTERS))
                raise InvalidArgument(f"unknown option {key!r} (known: {known})")
            merged[key.replace("-", "_")] = CONVERTERS[key](key, value)
    config = Config(**merged)
    _check_swarm_etcd_tls(config)
    # The sockets default to the state dir when only --state is moved.
    defaults = Config()
    if "cri_socket" not in merged and config.state != defaults.state:
        config = dataclasses.replace(config, cri_socket=config.state / "cri.sock")
    if "docker_socket" not in merged and config.state != defaults.state:
        config = dataclasses.replace(config, docker_socket=config.state / "docker.sock")
    return config
