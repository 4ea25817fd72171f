"""Start, adopt and stop the private etcd member a swarm manager owns.

Like containerd (pkg/containerd/supervisor.py), the member runs in its own session so a crash or
``kill -9`` of narwhald leaves it running; the next narwhald adopts it through its pid file.  Its
data dir lives under narwhald's root (``<root>/swarm/etcd``).  The client port (chosen free at
``swarm init`` or join) listens on 127.0.0.1 for this narwhald and on the advertise address for the
swarm's workers, which are etcd clients only; the peer URL is on the advertise address so joining
managers become Raft members (``MemberAdd`` by a manager, then this member starts with
``--initial-cluster-state existing``).  The ports are kept in ``<root>/swarm/etcd.json`` so a restart
reuses them (the peer URL is part of the membership).  Client and peer traffic is https with client
certificates of the swarm's CA on both sides (tls.py) once ``tls_dir`` names the node's certificates:
every member narwhald makes; a member config written before that (no ``tls_dir``) stays plain HTTP.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import socket
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from pkg import errors
from pkg.docker.swarm.tls import TLSFiles
from pkg.procs import is_live, terminate

log = logging.getLogger(__name__)

START_TIMEOUT = 30.0


@dataclass(frozen=True)
class MemberConfig:
    """What identifies this node's member: its name, data dir and URLs."""

    name: str
    client_port: int
    peer_host: str
    peer_port: int
    initial_cluster: str = ""  # name=peer-url,... of a member joining an existing cluster
    cluster_state: str = "new"
    tls_dir: str = ""  # the node's certificates (tls.TLSFiles.under): https and client certificates; "" plain

    @property
    def scheme(self) -> str:
        return "https" if self.tls_dir else "http"

    @property
    def tls(self) -> TLSFiles | None:
        return TLSFiles.under(Path(self.tls_dir)) if self.tls_dir else None

    @property
    def client_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.client_port}"

    @property
    def public_client_url(self) -> str:
        """Where the swarm's other nodes reach this member as clients."""
        host = f"[{self.peer_host}]" if ":" in self.peer_host else self.peer_host
        return f"{self.scheme}://{host}:{self.client_port}"

    @property
    def local_endpoint(self) -> tuple[str, int]:
        """Where this node's narwhald connects: loopback in plain HTTP; with TLS the advertise address, which
        the member's certificate names (its own address, so the traffic stays on this host all the same)."""
        return (self.peer_host if self.tls_dir else "127.0.0.1", self.client_port)

    @property
    def client_urls(self) -> str:
        if self.peer_host in ("127.0.0.1", "::1"):
            return self.client_url
        return f"{self.client_url},{self.public_client_url}"

    @property
    def peer_url(self) -> str:
        host = f"[{self.peer_host}]" if ":" in self.peer_host else self.peer_host
        return f"{self.scheme}://{host}:{self.peer_port}"


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


class EtcdMember:
    """One etcd process owned by this narwhald, identified by its pid file and data dir."""

    def __init__(self, root: Path, state: Path, binary: str = "etcd") -> None:
        self.root = root  # <root>/swarm
        self.state = state  # <state>/swarm
        self.binary = binary
        self.data_dir = root / "etcd"
        self.config_path = root / "etcd.json"
        self.pid_path = state / "etcd.pid"
        self.log_path = state / "etcd.log"
        self.pid: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    # ---- config ----
    def load(self) -> MemberConfig | None:
        try:
            return MemberConfig(**json.loads(self.config_path.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def create(self, name: str, peer_host: str, tls_dir: str = "") -> MemberConfig:
        """A new single-member cluster's config (``swarm init``); the data dir must not exist yet."""
        member = self.plan(name, peer_host, tls_dir)
        self.save(member)
        return member

    @staticmethod
    def plan(name: str, peer_host: str, tls_dir: str = "") -> MemberConfig:
        """Ports for a member on ``peer_host``: the peer port, and a client port free there and on loopback."""
        try:
            peer_port = free_port(peer_host)
            client_port = free_port(peer_host)
            for _ in range(20):
                if client_port != peer_port and _bindable("127.0.0.1", client_port):
                    break
                client_port = free_port(peer_host)
        except OSError as exc:
            raise errors.InvalidArgument(f"cannot listen on advertise address {peer_host}: {exc.strerror}") from None
        return MemberConfig(name=name, client_port=client_port, peer_host=peer_host, peer_port=peer_port,
                            tls_dir=tls_dir)

    def save(self, member: MemberConfig) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(member)))
        os.replace(tmp, self.config_path)

    # ---- lifecycle ----
    def alive(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        return self.pid is not None and is_live(self.pid, b"etcd", self.data_dir)

    def ensure_started(self, member: MemberConfig) -> bool:
        """Adopt our running etcd or start it; True when adopted."""
        try:
            pid = int(self.pid_path.read_text().strip())
        except (OSError, ValueError):
            pid = 0
        if pid and is_live(pid, b"etcd", self.data_dir):
            log.info("adopting running etcd pid %d", pid)
            self.pid, self._proc = pid, None
            return True
        self._start(member)
        return False

    def _start(self, member: MemberConfig) -> None:
        if shutil.which(self.binary) is None:
            raise errors.Unavailable(f"{self.binary} not found on PATH: install Debian's etcd-server (make setup)")
        self.state.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.data_dir.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        args = [
            self.binary, "--name", member.name, "--data-dir", str(self.data_dir),
            "--listen-client-urls", member.client_urls,
            "--advertise-client-urls", member.client_url if member.client_urls == member.client_url
            else member.public_client_url,
            "--listen-peer-urls", member.peer_url, "--initial-advertise-peer-urls", member.peer_url,
            "--initial-cluster", member.initial_cluster or f"{member.name}={member.peer_url}",
            "--initial-cluster-state", member.cluster_state,
            "--logger", "zap", "--log-outputs", "stderr",
        ]
        tls = member.tls
        if tls is not None:
            if not tls.exists():
                raise errors.FailedPrecondition(f"swarm: the node's certificates are missing in {member.tls_dir}")
            args += tls.etcd_flags()
        logfile = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            self._proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=logfile, stderr=logfile,
                                          start_new_session=True, close_fds=True)
        finally:
            logfile.close()
        self.pid = self._proc.pid
        tmp = self.pid_path.with_suffix(".tmp")
        tmp.write_text(f"{self.pid}\n")
        os.replace(tmp, self.pid_path)
        log.info("started etcd pid %d (data %s, client %s, peer %s)", self.pid, self.data_dir,
                 member.client_url, member.peer_url)

    async def restart_if_dead(self, member: MemberConfig) -> bool:
        if self.alive():
            return False
        log.error("etcd pid %s is gone; restarting", self.pid)
        self._start(member)
        return True

    async def stop(self, timeout: float = 10.0) -> None:
        if self.pid is not None:
            await terminate(self.pid, self.alive, timeout)
        if self._proc is not None:
            self._proc.poll()
        self.pid, self._proc = None, None
        self.pid_path.unlink(missing_ok=True)

    async def destroy(self) -> None:
        """Stop the member and forget it (``swarm leave``): data dir, config, log."""
        await self.stop()
        await asyncio.to_thread(shutil.rmtree, self.root, True)
        self.log_path.unlink(missing_ok=True)
