"""Start a runc v2 shim for a shim group before its first task, as containerd's ``start`` would.

containerd (runtime/v2/binary.go, shim/util.go) starts a task's shim by running
``containerd-shim-runc-v2 -namespace <ns> -address <grpc address> -publish-binary <containerd> -id <id> start``
with the task's bundle as working directory and ``TTRPC_ADDRESS`` in the environment.  That ``start``
(runc/manager) reads ``config.json`` there, takes the group from the ``io.containerd.runc.v2.group`` (else
``io.kubernetes.cri.sandbox-id``) annotation, and derives the shim's socket from containerd's address, the
namespace and the group: ``/run/containerd/s/sha256(<address>/<ns>/<group>)``.  If a shim already listens
there, ``start`` hands out its address and starts nothing; else it binds the socket, forks the shim daemon
(``-namespace <ns> -id <id> -address <address>``, its own process group) and returns.

So a shim started here for a group, from a directory of our own holding a config.json that names the group,
is the very shim containerd finds when the group's first task is created: Tasks.Create then skips the
shim's start-up.  The daemon opens the ``log`` fifo of its directory as stderr (containerd reads it for
the shims it starts); here ``log`` is a link to /dev/null, so nobody has to drain it.

An idle shim (no task ever created in it) never exits on its own: :func:`reap` kills it, after checking its
command line (the ``-id`` is the group, which no shim containerd starts carries: containerd names a shim by
its first task), and removes its socket and directory.  A shim that served tasks exits by itself when
containerd deletes its last one (its Shutdown RPC).
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import posixpath
import select
import shutil
import signal
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

from pkg import errors
from pkg.procs import live_cmdline, live_pids

log = logging.getLogger(__name__)

SHIM_BINARY = "containerd-shim-runc-v2"
SOCKET_DIR = Path("/run/containerd/s")  # the runc v2 shim's socketRoot (containerd's default state dir) + "s"
GROUP_ANNOTATION = "io.containerd.runc.v2.group"
RECORD = "narwhal-shim.json"  # what reap needs to find the shim again (another narwhald, `narwhald cleanup`)
START_TIMEOUT = 20.0
KILL_WAIT = 5.0


@dataclass(frozen=True)
class ShimSpot:
    """One group's pre-started shim: who it serves and where its files are."""

    containerd_address: str  # containerd's grpc socket, exactly as in its config (the socket's hash uses it)
    namespace: str
    group: str
    dir: str  # the shim's working directory (config.json, log, address, the record)

    @property
    def socket(self) -> Path:
        key = posixpath.normpath(posixpath.join(self.containerd_address, self.namespace, self.group))
        return SOCKET_DIR / hashlib.sha256(key.encode()).hexdigest()

    def daemon_argv(self, binary: str) -> list[bytes]:
        """The shim daemon's command line as runc/manager's newCommand forms it (without -debug)."""
        return [os.fsencode(a) for a in (binary, "-namespace", self.namespace, "-id", self.group,
                                         "-address", self.containerd_address)]


def socket_live(path: Path) -> bool:
    """Something accepts connections on the shim socket (the shim's CanConnect)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(0.1)
    try:
        sock.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        sock.close()


async def start(spot: ShimSpot, containerd_binary: str, cgroup_of: int | None = None) -> bool:
    """Start the group's shim unless one listens already; True if this call started one.

    ``cgroup_of``: a pid (containerd's) whose cgroups the shim joins when they differ from ours, so the
    shim sits where the shims containerd starts sit."""
    binary = shutil.which(SHIM_BINARY)
    if binary is None:
        raise errors.FailedPrecondition(f"{SHIM_BINARY} not found in PATH")
    if await asyncio.to_thread(socket_live, spot.socket):
        return False
    await asyncio.to_thread(_prepare_dir, spot, binary)
    env = {**os.environ, "GOMAXPROCS": "2", "TTRPC_ADDRESS": f"{spot.containerd_address}.ttrpc"}
    proc = await asyncio.create_subprocess_exec(
        binary, "-namespace", spot.namespace, "-address", spot.containerd_address,
        "-publish-binary", containerd_binary, "-id", spot.group, "start",
        cwd=spot.dir, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, start_new_session=True)  # not in narwhald's session, as containerd's
    try:
        out, err = await asyncio.wait_for(proc.communicate(), START_TIMEOUT)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        raise errors.Internal(f"{SHIM_BINARY} start for {spot.group[:24]}: exit {proc.returncode}: "
                              f"{(err or out).decode(errors='replace').strip()[:300]}")
    if cgroup_of is not None:
        await asyncio.to_thread(_join_cgroups, spot, binary, cgroup_of)
    return True


def _prepare_dir(spot: ShimSpot, binary: str) -> None:
    path = Path(spot.dir)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"ociVersion": "1.0.2",
                                                  "annotations": {GROUP_ANNOTATION: spot.group}}))
    (path / RECORD).write_text(json.dumps({**asdict(spot), "binary": binary}))
    log_link = path / "log"
    if not log_link.is_symlink():
        log_link.unlink(missing_ok=True)
        log_link.symlink_to("/dev/null")
    for stale in ("address", ".address"):  # the shim's WriteAddress refuses to overwrite (O_EXCL temp)
        (path / stale).unlink(missing_ok=True)


def find(spot: ShimSpot, binary: str) -> int | None:
    """The pid of the group's pre-started shim daemon, matched on its whole command line."""
    want = spot.daemon_argv(binary)
    found = live_pids(lambda argv: [a for a in argv if a and a != b"-debug"] == want)
    return found[0] if found else None


def serves_tasks(pid: int) -> bool:
    """The shim has children: a container's init (or a runc it runs) — so it is not idle.  Tells an idle
    pre-started shim from a used one without asking containerd (which may be down)."""
    try:  # the kernel's list of each thread's children (CONFIG_PROC_CHILDREN): no scan of /proc
        return any((task / "children").read_text().strip() for task in Path(f"/proc/{pid}/task").iterdir())
    except FileNotFoundError:
        pass
    except OSError:
        return False
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if _ppid(stat) == pid:
                return True
    return False


def _ppid(stat: str) -> int:
    fields = stat.rsplit(")", 1)[-1].split()
    return int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else 0


def load(directory: Path) -> tuple[ShimSpot, str] | None:
    """The spot and shim binary recorded in a pre-start directory (None if unreadable)."""
    try:
        data = json.loads((directory / RECORD).read_text())
        binary = data.pop("binary")
        return ShimSpot(**data), str(binary)
    except (OSError, ValueError, TypeError, KeyError):
        return None


def reap(directory: Path) -> bool:
    """Kill the group's pre-started shim if it still runs idle (checked by command line and for children,
    signalled through a pidfd so a recycled pid is never hit), remove its socket and the directory; True if
    a shim was killed.  The caller knows no task of the group exists (the group's pods are gone)."""
    killed = False
    loaded = load(directory)
    if loaded is not None:
        spot, binary = loaded
        # A shim that served tasks has exited with its last one, and taken its socket with it: then there is
        # nothing to look for in /proc (a scan of every process, the costly part of a reap).
        pid = find(spot, binary) if socket_live(spot.socket) else None
        if pid is not None and serves_tasks(pid):  # the caller thought the group had no task left: keep it
            log.warning("shim %d of %s still serves tasks; not killed", pid, spot.group[:24])
        elif pid is not None:
            killed = _kill(pid, spot.daemon_argv(binary))
        # The socket was our shim's (only one process binds the path; the group has no pod to start another):
        # after the kill it goes, even if a loaded host has not finished tearing the process down.  Else only
        # a stale one goes, never a live shim's.
        if killed or not socket_live(spot.socket):
            spot.socket.unlink(missing_ok=True)
    shutil.rmtree(directory, ignore_errors=True)
    return killed


def _kill(pid: int, argv: list[bytes]) -> bool:
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    try:
        current = live_cmdline(pid)
        if current is None or [a for a in current if a and a != b"-debug"] != argv:
            return False
        signal.pidfd_send_signal(fd, signal.SIGKILL)
        select.select([fd], [], [], KILL_WAIT)  # a pidfd turns readable when the process has exited
    except ProcessLookupError:
        return False
    finally:
        os.close(fd)
    log.info("killed idle shim %d (%s)", pid, argv[4].decode(errors="replace")[:24])
    return True


def _join_cgroups(spot: ShimSpot, binary: str, pid: int) -> None:
    """Move the shim into ``pid``'s cgroups where they differ from narwhald's (v1 and v2)."""
    try:
        theirs = Path(f"/proc/{pid}/cgroup").read_text()
        ours = Path("/proc/self/cgroup").read_text()
    except OSError:
        return
    if theirs == ours:
        return
    shim = find(spot, binary)
    if shim is None:
        return
    for line in theirs.splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            base = Path("/sys/fs/cgroup")  # v2 (unified)
        else:
            base = Path("/sys/fs/cgroup") / controllers.split(",")[0].removeprefix("name=")
        procs = base / path.lstrip("/") / "cgroup.procs"
        try:
            procs.write_text(str(shim))
        except OSError as exc:
            log.warning("shim %d: cannot join %s: %s", shim, procs, exc)
