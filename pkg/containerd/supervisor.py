"""Start, adopt and watch the containerd that a narwhald instance owns.

Each narwhald owns a private containerd: its config, root, state, socket and
pid file live under the instance's own dirs, and containerd's CRI plugin is
disabled (Narwhal is the CRI server).  containerd runs in its own session and
process group, so a crash or ``kill -9`` of narwhald leaves it — and every
container shim — running; the next narwhald adopts it through the pid file.
A watchdog restarts containerd if it dies while narwhald runs.
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

from pkg import errors
from pkg.config import Config
from pkg.procs import find_live, is_live, terminate

log = logging.getLogger(__name__)

START_TIMEOUT = 30.0

# Snapshotters and services we never use: disabling them keeps start-up quick and quiet.
_DISABLED_PLUGINS = [
    "io.containerd.grpc.v1.cri",
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.tracing.processor.v1.otlp",
    "io.containerd.internal.v1.tracing",
]


def render_config(cfg: Config) -> str:
    """containerd's config.toml (version 2) for this instance."""
    root, state = cfg.containerd_root, cfg.containerd_state
    disabled = ", ".join(f'"{p}"' for p in _DISABLED_PLUGINS)
    return f"""# Written by narwhald; changes are overwritten on start.
version = 2
root = "{root}"
state = "{state}"
disabled_plugins = [{disabled}]

[grpc]
  address = "{cfg.containerd_socket}"

[ttrpc]
  address = "{cfg.containerd_socket}.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{root}/opt"
"""


def containerd_env(cfg: Config, base: dict[str, str] | None = None) -> dict[str, str]:
    """containerd's environment: narwhald's, with ``GOGC`` from ``containerd-gogc``.

    containerd hands its own environment to the runc v2 shims it starts (containerd 1.6,
    runtime/v2/shim/util.go: ``os.Environ()`` plus ``GOMAXPROCS=2``), so the shims get the same GOGC;
    runc, started by the shims, too.  The config key wins over a GOGC narwhald itself was started with."""
    env = dict(os.environ if base is None else base)
    env["GOGC"] = str(cfg.containerd_gogc)
    return env


class Supervisor:
    """Owns one containerd process, identified by its pid file and config path."""

    def __init__(self, cfg: Config, binary: str = "containerd") -> None:
        self.cfg = cfg
        self.binary = binary
        self.dir = cfg.containerd_state
        self.config_path = self.dir / "config.toml"
        self.pid_path = self.dir / "containerd.pid"
        self.log_path = self.dir / "containerd.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None
        self.restarts = 0

    # ---- inspection ----
    def _owned_pid(self) -> int | None:
        """The pid from our pid file, if that process is alive and is our containerd; else our containerd
        found by its config path (narwhald killed after starting it but before writing the pid file)."""
        try:
            pid = int(self.pid_path.read_text().strip())
        except (OSError, ValueError):
            pid = 0
        if pid and is_live(pid, b"containerd", self.config_path):
            return pid
        found = find_live(b"containerd", self.config_path)
        if found is not None:
            log.warning("containerd pid %d runs with our config %s but the pid file did not name it",
                        found, self.config_path)
            self._write_pid_file(found)
        return found

    def alive(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        return self.pid is not None and is_live(self.pid, b"containerd", self.config_path)

    # ---- lifecycle ----
    def adopt(self) -> bool:
        """Adopt our running containerd, never starting one (``narwhald cleanup``); True if there is one."""
        pid = self._owned_pid()
        if pid is not None:
            self.pid, self._proc = pid, None
        return pid is not None

    def ensure_started(self) -> bool:
        """Adopt our running containerd or start one; returns True when adopted."""
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o711)
        self.cfg.containerd_root.mkdir(parents=True, exist_ok=True, mode=0o711)
        pid = self._owned_pid()
        if pid is not None:
            log.info("adopting running containerd pid %d", pid)
            self.pid, self._proc = pid, None
            return True
        self._start()
        return False

    def _start(self) -> None:
        if shutil.which(self.binary) is None:
            raise errors.Unavailable(f"{self.binary} not found on PATH: run `make setup`")
        self.config_path.write_text(render_config(self.cfg))
        sock = self.cfg.containerd_socket
        for stale in (sock, Path(f"{sock}.ttrpc")):
            stale.unlink(missing_ok=True)
        # containerd's log names images, registries and errors: root's only (0600), even when it already exists.
        logfile = open(os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600),  # noqa: SIM115
                       "ab")
        os.fchmod(logfile.fileno(), 0o600)
        try:
            self._proc = subprocess.Popen(
                [self.binary, "--config", str(self.config_path)],
                env=containerd_env(self.cfg),
                stdin=subprocess.DEVNULL,
                stdout=logfile,
                stderr=logfile,
                start_new_session=True,  # own session and process group: survives narwhald
                close_fds=True,
            )
        finally:
            logfile.close()
        self.pid = self._proc.pid
        self._write_pid_file(self.pid)
        log.info("started containerd pid %d (config %s)", self.pid, self.config_path)

    def _write_pid_file(self, pid: int) -> None:
        tmp = self.pid_path.with_suffix(".tmp")
        tmp.write_text(f"{pid}\n")
        os.replace(tmp, self.pid_path)

    async def restart_if_dead(self) -> bool:
        """Called by the watchdog: start containerd again if it died. True if restarted."""
        if self.alive():
            return False
        if self._proc is not None:
            log.error("containerd pid %s exited with %s; restarting", self.pid, self._proc.returncode)
        else:
            log.error("containerd pid %s is gone; restarting", self.pid)
        self.restarts += 1
        self._start()
        return True

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop our containerd (only when configured to: normally it outlives narwhald)."""
        pid = self.pid
        if pid is None or not self.alive():
            return
        gone = await terminate(pid, self.alive, timeout)
        if self._proc is not None:
            self._proc.poll()
        if not gone:  # the pid file stays: whoever comes next still finds it
            raise errors.Unavailable(f"containerd pid {pid} is still alive after SIGKILL")
        self.pid_path.unlink(missing_ok=True)
