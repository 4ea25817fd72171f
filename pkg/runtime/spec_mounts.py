"""Mounts, devices, masked paths and sysctls of a container spec, with containerd's CRI rules.

Host paths are inspected here (stat, realpath, /proc/self/mountinfo), so
these helpers do blocking I/O: build specs in a thread.
"""
from __future__ import annotations

import hashlib
import os
import posixpath
import re
import stat
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pkg.errors import InvalidArgument, NotFound
from pkg.runtime.copy_up import seed_volume
from pkg.runtime.spec_options import Device, Mount, Namespace, Propagation, SandboxFiles

DEFAULT_MASKED_PATHS: tuple[str, ...] = (
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
    "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/sys/devices/virtual/powercap", "/proc/scsi",
)
DEFAULT_READONLY_PATHS: tuple[str, ...] = (
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
)
ETC_HOSTNAME, ETC_HOSTS, RESOLV_CONF, DEV_SHM = "/etc/hostname", "/etc/hosts", "/etc/resolv.conf", "/dev/shm"


def default_mounts(*, privileged: bool) -> list[dict[str, Any]]:
    """containerd's default Unix mounts without /run (as CRI), plus a cgroup mount (rw only if privileged)."""
    rw = "rw" if privileged else "ro"
    return [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": DEV_SHM, "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", rw]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", rw]},
    ]


def sandbox_mounts(files: SandboxFiles, *, readonly: bool, user_mounts: Sequence[Mount]) -> list[Mount]:
    """The pod's /etc/hostname, /etc/hosts, /etc/resolv.conf and /dev/shm, unless the container mounts its own.

    These must exist (a missing one is a pod bug, not a directory to create),
    except /etc/hostname, which containerd also skips when absent.
    """
    taken = {posixpath.normpath(m.container_path) for m in user_mounts}
    out = []
    for dest, src, ro in (
        (ETC_HOSTNAME, files.hostname_path, readonly),
        (ETC_HOSTS, files.hosts_path, readonly),
        (RESOLV_CONF, files.resolv_conf_path, readonly),
        (DEV_SHM, files.shm_path, False),
    ):
        if not src or dest in taken:
            continue
        if not os.path.exists(src):
            if dest == ETC_HOSTNAME:
                continue
            raise NotFound(f"the pod's {dest} source {src!r} does not exist")
        out.append(Mount(container_path=dest, host_path=src, readonly=ro))
    return out


def _unescape(field: str) -> str:
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def lookup_mount(path: str, mountinfo: Path) -> tuple[str, list[str]]:
    """The mount point holding ``path`` and its optional fields (``shared:N``, ``master:N``)."""
    best: tuple[str, list[str]] | None = None
    for line in mountinfo.read_text().splitlines():
        fields = line.split()
        if len(fields) < 7:
            continue
        point = _unescape(fields[4])
        optional = fields[6:fields.index("-")] if "-" in fields else []
        inside = path == point or point == "/" or path.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= len(best[0])):
            best = (point, optional)
    if best is None:
        raise NotFound(f"no mount point found for {path!r}")
    return best


def _check_propagation(src: str, propagation: Propagation, mountinfo: Path) -> None:
    if propagation is Propagation.PRIVATE:
        return
    point, optional = lookup_mount(src, mountinfo)
    shared = any(o.startswith("shared:") for o in optional)
    slave = any(o.startswith("master:") for o in optional)
    if propagation is Propagation.BIDIRECTIONAL and not shared:
        raise InvalidArgument(f"path {src!r} is mounted on {point!r} but it is not a shared mount")
    if propagation is Propagation.HOST_TO_CONTAINER and not (shared or slave):
        raise InvalidArgument(f"path {src!r} is mounted on {point!r} but it is not a shared or slave mount")


def _check_container_path(path: str, what: str) -> str:
    if not path or not path.startswith("/"):
        raise InvalidArgument(f"{what} {path!r} must be an absolute path")
    if "\0" in path:
        raise InvalidArgument(f"{what} {path!r} contains a NUL byte")
    return posixpath.normpath(path)


def bind_mounts(
    mounts: Iterable[Mount], *, mountinfo: Path, create_missing: bool
) -> tuple[list[dict[str, Any]], str]:
    """OCI bind mounts for CRI mounts, sorted shallow-first, and the rootfs propagation they need ("" = default)."""
    ordered = sorted(mounts, key=lambda m: _check_container_path(m.container_path, "container path").count("/"))
    out: list[dict[str, Any]] = []
    rootfs_propagation = ""
    for m in ordered:
        if m.tmpfs:
            out.append(_tmpfs_mount(m))
            continue
        if not isinstance(m.propagation, Propagation):
            raise InvalidArgument(f"unknown mount propagation {m.propagation!r} for {m.container_path!r}")
        if not m.host_path or not m.host_path.startswith("/"):
            raise InvalidArgument(f"host path {m.host_path!r} of mount {m.container_path!r} must be absolute")
        if not os.path.lexists(m.host_path):
            if not create_missing:
                raise NotFound(f"host path {m.host_path!r} of mount {m.container_path!r} does not exist")
            os.makedirs(m.host_path, mode=0o755, exist_ok=True)
        src = os.path.realpath(m.host_path)
        if not os.path.exists(src):
            raise NotFound(f"host path {m.host_path!r} of mount {m.container_path!r} is a dangling symlink")
        options = ["rbind"]
        if m.propagation is Propagation.BIDIRECTIONAL:
            _check_propagation(src, m.propagation, mountinfo)
            options.append("rshared")
            rootfs_propagation = "rshared"
        elif m.propagation is Propagation.HOST_TO_CONTAINER:
            _check_propagation(src, m.propagation, mountinfo)
            options.append("rslave")
            if rootfs_propagation not in ("rshared", "rslave"):
                rootfs_propagation = "rslave"
        else:
            options.append("rprivate")
        if m.recursive_read_only:
            if not m.readonly:
                raise InvalidArgument(f"recursive read-only mount {m.container_path!r} must also be read-only")
            if m.propagation is not Propagation.PRIVATE:
                raise InvalidArgument(f"recursive read-only mount {m.container_path!r} needs private propagation")
            options.append("rro")
        else:
            options.append("ro" if m.readonly else "rw")
        out.append({"destination": posixpath.normpath(m.container_path), "type": "bind", "source": src,
                    "options": options})
    return out, rootfs_propagation


def _tmpfs_mount(m: Mount) -> dict[str, Any]:
    """A tmpfs of its own (by default noexec, nosuid, nodev)."""
    options = ["nosuid", "nodev", "noexec", "ro" if m.readonly else "rw"]
    if m.tmpfs_size:
        options.append(f"size={m.tmpfs_size}")
    if m.tmpfs_mode:
        options.append(f"mode={m.tmpfs_mode:o}")
    return {"destination": posixpath.normpath(m.container_path), "type": "tmpfs", "source": "tmpfs",
            "options": options}


def merge_mounts(defaults: list[dict[str, Any]], binds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Defaults minus those a bind replaces (and all of /dev/* if /dev itself is bound), then the binds."""
    taken = {b["destination"] for b in binds}
    kept = [
        d for d in defaults
        if d["destination"] not in taken and not ("/dev" in taken and d["destination"].startswith("/dev/"))
    ]
    return kept + binds


def _device_node(path: str) -> tuple[str, int, int, int, int, int] | None:
    """(type, major, minor, mode, uid, gid) of a device node, None if ``path`` is not one."""
    st = os.lstat(path)
    if stat.S_ISCHR(st.st_mode):
        kind = "c"
    elif stat.S_ISBLK(st.st_mode):
        kind = "b"
    elif stat.S_ISFIFO(st.st_mode):
        kind = "p"
    else:
        return None
    return kind, os.major(st.st_rdev), os.minor(st.st_rdev), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid


def _linux_device(container_path: str, node: tuple[str, int, int, int, int, int]) -> dict[str, Any]:
    kind, major, minor, mode, uid, gid = node
    return {"path": container_path, "type": kind, "major": major, "minor": minor, "fileMode": mode,
            "uid": uid, "gid": gid}


def _cgroup_rule(node: tuple[str, int, int, int, int, int], access: str) -> dict[str, Any]:
    return {"allow": True, "type": node[0], "major": node[1], "minor": node[2], "access": access}


def devices(devs: Iterable[Device]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``linux.devices`` and their ``resources.devices`` allow rules for CRI devices."""
    nodes: list[dict[str, Any]] = []
    rules: list[dict[str, Any]] = []
    for d in devs:
        if d.cgroup_rule:
            rules.append(cgroup_rule(d.cgroup_rule))
            continue
        access = d.permissions or "rwm"
        if any(ch not in "rwm" for ch in access):
            raise InvalidArgument(f"device {d.host_path!r}: permissions {d.permissions!r} must be a subset of rwm")
        dest = _check_container_path(d.container_path, "device container path")
        try:
            src = os.path.realpath(d.host_path, strict=True)
        except FileNotFoundError:
            raise NotFound(f"device {d.host_path!r} does not exist") from None
        except OSError as err:
            raise InvalidArgument(f"device {d.host_path!r}: {err.strerror}") from None
        if os.path.isdir(src):
            for dirpath, _dirs, files in os.walk(src):
                for name in sorted(files):
                    full = os.path.join(dirpath, name)
                    node = _device_node(full)
                    if node is not None:
                        nodes.append(_linux_device(posixpath.join(dest, os.path.relpath(full, src)), node))
                        rules.append(_cgroup_rule(node, access))
            continue
        node = _device_node(src)
        if node is None:
            raise InvalidArgument(f"{d.host_path!r} is not a device node")
        nodes.append(_linux_device(dest, node))
        rules.append(_cgroup_rule(node, access))
    return nodes, rules


_CGROUP_RULE = re.compile(r"^([acb]) ([0-9]+|\*):([0-9]+|\*) ([rwm]{1,3})\Z")


def cgroup_rule(text: str) -> dict[str, Any]:
    """A device cgroup rule ("c 7:128 rwm") as a ``resources.devices`` allow entry ("*" = any major or minor)."""
    match = _CGROUP_RULE.match(text.strip())
    if match is None:
        raise InvalidArgument(f"invalid device cgroup format '{text}'")
    kind, major, minor, access = match.groups()
    rule: dict[str, Any] = {"allow": True, "type": kind, "access": access}
    if major != "*":
        rule["major"] = int(major)
    if minor != "*":
        rule["minor"] = int(minor)
    return rule


_SKIP_DEV_DIRS = {"pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"}


def host_devices(dev_root: Path = Path("/dev")) -> list[dict[str, Any]]:
    """Every device node of the host's /dev, for privileged containers (containerd's ``WithHostDevices``)."""
    out: list[dict[str, Any]] = []
    for dirpath, dirs, files in os.walk(dev_root):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DEV_DIRS)
        for name in sorted(files):
            if name == "console" and dirpath == str(dev_root):
                continue
            full = os.path.join(dirpath, name)
            try:
                node = _device_node(full)
            except OSError:
                continue
            if node is not None and node[0] != "p":
                out.append(_linux_device("/dev/" + os.path.relpath(full, dev_root), node))
    return out


# Namespaced sysctls, by the namespace that must be private for a container to set them (runc's rules).
_IPC_SYSCTLS = {"kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall", "kernel.shmmax",
                "kernel.shmmni", "kernel.shm_rmid_forced"}
_UTS_SYSCTLS = {"kernel.hostname", "kernel.domainname"}


def validate_sysctls(sysctls: Mapping[str, str], *, network: Namespace, ipc: Namespace, uts: Namespace) -> None:
    """Reject sysctls runc would refuse, with a clear message instead of a failed start."""
    for key, value in sysctls.items():
        name = key.replace("/", ".")
        if not name or any(not (ch.isalnum() or ch in "._-") for ch in name) or "\n" in value:
            raise InvalidArgument(f"invalid sysctl {key!r}")
        if name.startswith("net."):
            if network.mode == "host":
                raise InvalidArgument(f"sysctl {key!r} is not allowed with the host network namespace")
        elif name in _IPC_SYSCTLS or name.startswith("fs.mqueue."):
            if ipc.mode == "host":
                raise InvalidArgument(f"sysctl {key!r} is not allowed with the host IPC namespace")
        elif name in _UTS_SYSCTLS:
            if uts.mode == "host":
                raise InvalidArgument(f"sysctl {key!r} is not allowed with the host UTS namespace")
        else:
            raise InvalidArgument(f"sysctl {key!r} is not namespaced and cannot be set for a container")


def image_volume_mounts(volumes: Iterable[str], user_mounts: Sequence[Mount], volumes_dir: Path,
                        rootfs: Path | None) -> list[Mount]:
    """A private directory for each image VOLUME the request does not mount itself (containerd's volumeMounts).

    The directory is named after the volume's path (so rebuilding a spec
    reuses it) and, while still empty, is seeded with what the image has at
    that path — owners, modes and symlinks kept, nothing followed out of the
    rootfs.
    """
    taken = {posixpath.normpath(m.container_path) for m in user_mounts}
    out = []
    for volume in sorted(set(volumes)):
        dest = _check_container_path(volume, "image volume")
        if dest in taken or dest == "/":
            continue
        source = volumes_dir / hashlib.sha256(dest.encode()).hexdigest()[:24]
        source.mkdir(parents=True, exist_ok=True)
        if rootfs is not None and not any(source.iterdir()):
            _seed_volume(rootfs, dest, source)
        out.append(Mount(container_path=dest, host_path=str(source)))
    return out


def _seed_volume(rootfs: Path, dest: str, target: Path) -> None:
    """Copy-up without following symlinks on either side (see pkg.runtime.copy_up)."""
    seed_volume(rootfs, dest, target)
