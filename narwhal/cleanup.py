"""``narwhald cleanup``: remove what one instance made on the host, once its containers are gone.

A narwhald leaves host-global objects behind when it goes away for good: its default bridge
(``nw-<instance>``), its networks' masquerade and FORWARD chains (``NW-MASQ-<instance>``,
``NW-FWD-<instance>``), the firewall plugin's admin chain (``NARWHAL-ADMIN-<instance>``, jumped to from
the shared ``CNI-FORWARD``, for pods attached by older versions and overlays), its Docker networks'
bridges and isolation chain (``NW-ISO-<instance>``), the
swarm's routing-mesh chains (``NW-MESH-<instance>``, ``NW-MESHMQ-<instance>``, ``NW-MESHFWD-<instance>``)
and etcd member, per-container NAT/portmap chains of a crash, cgroup parents, mounts under its dirs, and the default
conflist it wrote.  The package's purge and the test teardown run this.  Every object is found by
this instance's own names (``cfg.instance_id`` is a hash of its root) or under its own dirs: other
instances' objects and CNI's shared chains are never touched, and nothing is deleted by pattern.

It refuses while the instance's narwhald runs (it holds ``root/narwhald.lock``) or its containers
do, unless ``force``: then narwhald gets SIGTERM and the containers SIGKILL (through containerd).
"""
from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from pkg import errors, mount
from pkg.cgroups.cleanup import remove_cgroup
from pkg.cni import config as cni_config
from pkg.cni import defaults, gc, iptables
from pkg.cni.manager import NetworkManager
from pkg.cni.netrules import NetworkRules
from pkg.config import Config
from pkg.containerd import shim_start, tasks
from pkg.containerd.client import Client
from pkg.containerd.supervisor import START_TIMEOUT, Supervisor
from pkg.docker.networks import conflist as network_conflist
from pkg.docker.networks.firewall import Isolation
from pkg.docker.networks.host import delete_bridge
from pkg.docker.networks.model import Network
from pkg.docker.swarm.etcd import EtcdMember
from pkg.docker.swarm.mesh import Mesh
from pkg.docker.swarm.overlay import recorded_links
from pkg.docker.swarm.vxlan import DataPlane
from pkg.logs.service_client import LogService, service_pid

log = logging.getLogger("narwhal.cleanup")

STOP_TIMEOUT = 60.0  # how long a forced narwhald gets to stop (it stops its servers, not containers)
KILL_TIMEOUT = 15.0


class Refused(errors.FailedPrecondition):
    """The instance is still in use: nothing was removed."""


class Cleanup:
    def __init__(self, cfg: Config, *, force: bool = False, remove_dirs: bool = False,
                 say: Callable[[str], None] = print) -> None:
        self.cfg = cfg
        self.force = force
        self.remove_dirs = remove_dirs
        self.say = say
        self._lock: IO[str] | None = None

    async def run(self) -> None:
        cfg = self.cfg
        self.say(f"cleaning up narwhal instance {cfg.instance_id} (root {cfg.root}, state {cfg.state})")
        try:
            await asyncio.to_thread(self._hold_instance_lock)
            await self._stop_containers()
            await asyncio.to_thread(self._prestarted_shims)
            await self._log_service()
            await self._swarm_etcd()
            networks = await asyncio.to_thread(self._docker_networks)
            await self._network_state(networks)
            await self._firewall()
            for bridge in await asyncio.to_thread(self._bridges, networks):
                await delete_bridge(bridge)
                self.say(f"removed bridge {bridge}")
            for name in recorded_links(cfg.state):  # swarm overlay segments (vxlan first, then its bridge)
                if Path("/sys/class/net", name).exists():
                    await DataPlane().remove_link(name)
                    self.say(f"removed overlay link {name}")
            await asyncio.to_thread(self._default_conflist)
            await self._cgroups()
            await asyncio.to_thread(self._unmount)
            await asyncio.to_thread(self._files)
        finally:
            if self._lock is not None:
                self._lock.close()
        self.say("done")

    # ---- is it in use? ----
    def _hold_instance_lock(self) -> None:
        """Take narwhald's own lock: while we hold it no narwhald can start on this root."""
        path = self.cfg.root / "narwhald.lock"
        if not path.exists():
            return
        lock = open(path, "a+")  # noqa: SIM115 - held until the cleanup ends
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            pid = lock.read().strip()
            if not self.force:
                lock.close()
                raise Refused(f"narwhald (pid {pid or '?'}) is running with root {self.cfg.root}: "
                              "stop it first, or pass --force") from None
            unit = _service_of(pid)
            if unit:  # Restart=always would start it again behind our back
                lock.close()
                raise Refused(f"narwhald (pid {pid}) runs as systemd's {unit}: `systemctl stop {unit}` first") from None
            try:
                self._stop_daemon(lock, pid)
            except BaseException:
                lock.close()
                raise
        self._lock = lock

    def _stop_daemon(self, lock: IO[str], pid: str) -> None:
        if not pid.isdigit():
            raise Refused(f"narwhald is running with root {self.cfg.root} but its pid is unknown")
        self.say(f"stopping narwhald pid {pid}")
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise Refused(f"narwhald pid {pid} did not stop within {STOP_TIMEOUT:g}s") from None
                time.sleep(0.1)

    async def _stop_containers(self) -> None:
        """Refuse while containers run (unless forced: kill them); delete stopped tasks; stop our containerd."""
        cfg = self.cfg
        supervisor = Supervisor(cfg) if cfg.owns_containerd else None
        up = supervisor.adopt() if supervisor is not None else cfg.containerd_socket.exists()
        if supervisor is not None and not up:
            shims = await asyncio.to_thread(_shims_of, cfg.containerd_socket)
            # An idle shim narwhald pre-started for a pod (pkg.runtime.shim_prestart) runs no container:
            # _prestarted_shims kills it.
            idle = await asyncio.to_thread(self._idle_prestarted)
            shims = [pid for pid in shims if pid not in idle]
            if shims and not self.force:
                raise Refused(f"containers of this instance still run (shims {', '.join(map(str, shims))}) "
                              "while its containerd is down: start narwhald and remove them, or pass --force")
            if not shims:
                return
            supervisor.ensure_started()  # it reconnects to the shims, so their tasks can be killed
            up = True
        try:
            if up:
                clients = [Client(cfg.containerd_socket, ns) for ns in (cfg.containerd_namespace, cfg.docker_namespace)]
                try:
                    await self._tasks(clients)  # the CRI and Docker domains
                finally:
                    for client in clients:
                        await client.close()
        except Refused:
            raise  # containers run: the refusal touches nothing, containerd included
        except BaseException:
            # Whatever failed (containerd not answering, a task that would not go), the containerd we own
            # must not outlive the cleanup: a later run starts it again if shims still need it.
            if supervisor is not None:
                await asyncio.shield(supervisor.stop())
            raise
        if supervisor is not None:
            await supervisor.stop()
            self.say("stopped containerd")

    async def _tasks(self, clients: list[Client]) -> None:
        """Refuse (touching nothing) while any task runs, unless forced; then kill and delete them all."""
        found: list[tuple[Client, tasks.TaskInfo]] = []
        for client in clients:
            await client.wait_ready(START_TIMEOUT)
            found += [(client, t) for t in (await tasks.list_all(client)).values()]
        running = [(c, t) for c, t in found if t.status != tasks.TaskStatus.STOPPED]
        if running and not self.force:
            names = ", ".join(f"{t.id[:12]} ({c.namespace})" for c, t in running[:5])
            raise Refused(f"{len(running)} container(s) of this instance still run ({names}): stop them first, "
                          "or pass --force")
        for client, task in running:
            await tasks.kill(client, task.id, signal.SIGKILL, all_=True)
            with contextlib.suppress(TimeoutError, errors.NarwhalError):
                await asyncio.wait_for(tasks.wait(client, task.id), KILL_TIMEOUT)
            self.say(f"killed container {task.id[:12]} ({client.namespace})")
        for client, task in found:
            await tasks.delete(client, task.id)

    def _idle_prestarted(self) -> set[int]:
        """Pre-started shims that serve no container (no child process): no reason to refuse."""
        found = set()
        for directory in _prestart_dirs(self.cfg):
            loaded = shim_start.load(directory)
            pid = shim_start.find(*loaded) if loaded is not None else None
            if pid is not None and not shim_start.serves_tasks(pid):
                found.add(pid)
        return found

    def _prestarted_shims(self) -> None:
        """Pre-started shims left idle (their tasks, if they had any, are gone by now): killed after a check
        of their command line; their sockets and directories removed."""
        for directory in _prestart_dirs(self.cfg):
            if shim_start.reap(directory):
                self.say(f"killed idle shim of {directory.name[:12]}")

    # ---- network ----
    def _docker_networks(self) -> list[Network]:
        """The Docker domain's user-defined networks, from their records (pkg.docker.networks.store's files)."""
        found = []
        for path in sorted((self.cfg.root / "docker" / "networks").glob("*.json")):
            try:
                network = Network.from_json(json.loads(path.read_bytes()))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                self.say(f"warning: unreadable network record {path}: {exc}")
                continue
            if not network.predefined and network.cni_name:
                found.append(network)
        return found

    async def _network_state(self, networks: list[Network]) -> None:
        """CNI DEL of every cached attachment, pinned netns, IPs, and the tagged NAT/portmap chains and
        firewall rules of our networks: the leak GC with no sandbox known."""
        manager = NetworkManager(self.cfg, manage_rules=False)  # its rules go in _firewall
        await manager.reload()  # the default network (its subnets tell which CNI-FORWARD rules are ours)
        conflists = [cni_config.from_dict(network_conflist.conflist(self.cfg, n), Path(f"<network {n.name}>"))
                     for n in networks]

        async def named() -> list[cni_config.NetworkConfigList]:
            return conflists

        manager.named_networks = named
        await gc.collect(manager, set())

    async def _log_service(self) -> None:
        """The log service (``log-service: true``) outlives a stopped narwhald, as containerd does: stopped
        here, once the containers it copied for are gone."""
        pid = await asyncio.to_thread(service_pid, self.cfg.log_service_dir)
        if pid is not None:
            await LogService(self.cfg.log_service_dir, self.cfg.state / "bin").stop()
            self.say(f"stopped the log service (pid {pid})")

    async def _swarm_etcd(self) -> None:
        """The swarm's etcd member outlives a killed narwhald (as containerd does): stopped here, its data
        kept (``--remove-dirs`` removes it with the rest of the root)."""
        member = EtcdMember(self.cfg.root / "docker" / "swarm", self.cfg.state / "docker" / "swarm")
        try:
            member.pid = int(member.pid_path.read_text().strip())
        except (OSError, ValueError):
            return
        if member.alive():
            pid = member.pid
            await member.stop()
            self.say(f"stopped the swarm's etcd (pid {pid})")

    async def _firewall(self) -> None:
        """The isolation chain of our Docker networks, the swarm's mesh chains and the firewall plugin's admin chain."""
        await Isolation(self.cfg.instance_id, defaults.bridge_name(self.cfg)).sync([])
        await Mesh(self.cfg.instance_id).remove()  # the swarm's published ingress ports
        for what in await NetworkRules(self.cfg.instance_id).remove_all():  # masquerade/FORWARD per network
            self.say(f"removed {what}")
        chain = defaults.admin_chain(self.cfg)
        for cmd, save in iptables.families():
            table = (await iptables.snapshot(save, ("filter",))).get("filter")
            if table is None or chain not in table.chains:
                continue
            for rule in table.rules:
                if rule.target() == chain:
                    await _iptables(cmd, "-D", rule.chain, *rule.args)
            await _iptables(cmd, "-F", chain)
            if await _iptables(cmd, "-X", chain):
                self.say(f"removed {cmd} chain {chain}")

    def _our_conflist(self) -> tuple[Path, dict[str, Any]] | None:
        """The default conflist narwhald wrote for this instance (``10-narwhal.conflist`` naming us)."""
        path = self.cfg.cni_conf_dir / defaults.FILE_NAME
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("name") != defaults.network_name(self.cfg):
            return None
        return path, data

    def _bridges(self, networks: list[Network]) -> list[str]:
        """Our default bridge (by our conflist, or the derived name) and our Docker networks' bridges."""
        bridges = [n.bridge for n in networks if n.bridge]
        ours = self._our_conflist()
        if ours is not None:
            for plugin in ours[1].get("plugins") or []:
                if isinstance(plugin, dict) and plugin.get("type") == "bridge" and plugin.get("bridge"):
                    bridges.append(str(plugin["bridge"]))
        if not self.cfg.cni_bridge:
            bridges.append(defaults.bridge_name(self.cfg))  # nw-<instance>: ours whatever the conf dir says
        return [b for b in dict.fromkeys(bridges) if Path("/sys/class/net", b).exists()]

    def _default_conflist(self) -> None:
        ours = self._our_conflist()
        if ours is not None:
            ours[0].unlink(missing_ok=True)
            self.say(f"removed {ours[0]}")

    # ---- cgroups, mounts, files ----
    async def _cgroups(self) -> None:
        base = f"/narwhal-{self.cfg.instance_id}"  # pkg.runtime.context's default cgroup parents
        for parent in (base, f"{base}-docker"):
            try:
                await remove_cgroup(parent)
            except errors.NarwhalError as exc:
                self.say(f"warning: {exc.message}")

    def _unmount(self) -> None:
        dirs = {self.cfg.root, self.cfg.state}
        for target in sorted({m for d in dirs for m in mount.mounts_under(d)}, key=lambda p: -len(p.parts)):
            mount.umount(target)
            self.say(f"unmounted {target}")

    def _files(self) -> None:
        for sock in (self.cfg.cri_socket, self.cfg.docker_socket):
            sock.unlink(missing_ok=True)
        staging = self.cfg.staging_root  # stream-unpack's layers of pulls cut short
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
            self.say(f"removed {staging}")
        if not self.remove_dirs:
            return
        for directory in (self.cfg.state, self.cfg.root):
            if len(directory.resolve().parts) < 3:
                raise errors.InvalidArgument(f"refusing to remove {directory}: not a dedicated directory")
            if directory.exists():
                shutil.rmtree(directory)
                self.say(f"removed {directory}")


async def _iptables(cmd: str, *args: str) -> bool:
    proc = await asyncio.create_subprocess_exec(cmd, "-w", "-t", "filter", *args, stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    if proc.returncode and b"No chain" not in err and b"does not exist" not in err:
        log.warning("%s %s: %s", cmd, " ".join(args), err.decode(errors="replace").strip())
    return proc.returncode == 0


def _service_of(pid: str) -> str:
    try:
        return service_in(Path(f"/proc/{pid}/cgroup").read_text())
    except OSError:
        return ""


def service_in(proc_cgroup: str) -> str:
    """The systemd service of a ``/proc/<pid>/cgroup`` ("" when none, or not under systemd)."""
    for line in proc_cgroup.splitlines():  # "0::/system.slice/narwhald.service" or "1:name=systemd:/system.slice/..."
        _, _, path = line.partition(":")[2].partition(":")
        name = path.rstrip("/").rsplit("/", 1)[-1]
        if (line.startswith("0::") or ":name=systemd:" in line) and name.endswith(".service"):
            return name
    return ""


def _prestart_dirs(cfg: Config) -> list[Path]:
    base = cfg.state / "shims"  # the CRI domain's (narwhal/runtime.py)
    return sorted(d for d in base.iterdir() if d.is_dir()) if base.is_dir() else []


def _shims_of(socket: Path) -> list[int]:
    """containerd-shim processes started by the containerd at ``socket`` (they outlive it)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and b"containerd-shim" in os.path.basename(argv[0]) and str(socket).encode() in argv:
            found.append(int(proc.name))
    return found
