"""From a container's request, its sandbox and its image to the OCI spec runc runs.

Joins the pod's pinned namespaces by path, bind-mounts the pod's files, and
gives the spec builder a read-only view of the rootfs so users and groups
resolve against the image's own /etc/passwd and /etc/group.
"""
from __future__ import annotations

import asyncio
import contextlib
import socket
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from pkg.containerd.snapshots import Mount as SnapshotMount
from pkg.images.model import Image
from pkg.model.container import ContainerMetadata, ContainerUser
from pkg.model.sandbox import NamespaceMode, SandboxConfig, SandboxMetadata
from pkg.mount import MS_BIND, MS_RDONLY, MS_REC, mount, umount
from pkg.runtime import image_files, spec
from pkg.runtime.context import RuntimeContext
from pkg.runtime.spec_options import ContainerSpecOptions, Namespace, SandboxFiles
from pkg.runtime.user import ImageFiles

HOSTNAME, HOSTS, RESOLV_CONF = "hostname", "hosts", "resolv.conf"


def sandbox_hostname(config: SandboxConfig) -> str:
    """The one hostname of a pod: its UTS name, /etc/hostname, /etc/hosts' own line and every container's HOSTNAME.

    As containerd's CRI: the config's ``hostname``, or the node's own when it is empty (kubelet leaves it
    empty for host-network pods, critest for most of its pods). Never derived from the pod's name, which may
    be far longer than the kernel's 64 bytes. A host-network pod shares the node's UTS namespace, so its
    name is the node's whatever the config says (containerd would write the config's into /etc/hostname
    while ``hostname`` answered the node's).
    """
    if config.host_network:
        return socket.gethostname()
    return config.hostname or socket.gethostname()


def sandbox_files(ctx: RuntimeContext, sandbox: SandboxMetadata) -> SandboxFiles:
    root = Path(sandbox.sandbox_dir)
    host_ipc = sandbox.config.namespace_options.ipc == NamespaceMode.NODE
    return SandboxFiles(
        hostname_path=str(root / HOSTNAME),
        hosts_path=str(root / HOSTS),
        resolv_conf_path=str(root / RESOLV_CONF),
        shm_path="/dev/shm" if host_ipc else str(ctx.sandbox_state(sandbox.id) / "shm"),
    )


def pod_namespaces(sandbox: SandboxMetadata, container_pid: NamespaceMode, infra_pid: int,
                   target_pid: int) -> dict[str, Namespace]:
    """network/ipc/uts: the pod's pins (or the host's); pid per the container's own option:
    the host's (NODE), the infra task's (POD), another container's (TARGET) or a new one."""
    net = Namespace.join(sandbox.netns_path) if sandbox.netns_path else Namespace.host()
    ipc = Namespace.join(sandbox.ipc_path) if sandbox.ipc_path else Namespace.host()
    uts = Namespace.join(sandbox.uts_path) if sandbox.uts_path else Namespace.host()
    if container_pid == NamespaceMode.NODE:
        pid = Namespace.host()
    elif container_pid == NamespaceMode.POD and infra_pid:
        pid = Namespace.join(f"/proc/{infra_pid}/ns/pid")
    elif container_pid == NamespaceMode.TARGET and target_pid:
        pid = Namespace.join(f"/proc/{target_pid}/ns/pid")
    else:
        pid = Namespace.new()
    return {"network": net, "ipc": ipc, "uts": uts, "pid": pid}


def known_files(ctx: RuntimeContext, image: Image) -> ImageFiles | None:
    """The image's files when a spec of it can be built without a view of the snapshot (``build`` with them):
    read before, and no image VOLUME to seed from the rootfs."""
    if image.config.volumes:
        return None
    return ctx.image_files.get(image.snapshotter, image.chain_id)


async def build(ctx: RuntimeContext, metadata: ContainerMetadata, sandbox: SandboxMetadata, image: Image,
                files: list[SnapshotMount] | ImageFiles, infra_pid: int = 0, target_pid: int = 0) -> dict[str, Any]:
    """The container's OCI spec.  ``files``: the image's, as ``known_files`` has them, or the prepared snapshot's
    mounts, viewed read-only for them (and kept for the image's next containers)."""
    if isinstance(files, ImageFiles):
        opts = _options(ctx, metadata, sandbox, image, infra_pid, target_pid, None, files)
        return await asyncio.to_thread(spec.build_container_spec, opts)
    async with readonly_view(files) as rootfs:
        opts = _options(ctx, metadata, sandbox, image, infra_pid, target_pid, rootfs, None)
        result, found = await asyncio.to_thread(_build_reading, opts)
    ctx.image_files.put(image.snapshotter, image.chain_id, found)
    return result


def _build_reading(opts: ContainerSpecOptions) -> tuple[dict[str, Any], ImageFiles | None]:
    """In a thread: the spec, and the view's files for the image's next containers."""
    result = spec.build_container_spec(opts)
    return result, image_files.read(opts.rootfs_path) if opts.rootfs_path is not None else None


def _options(ctx: RuntimeContext, metadata: ContainerMetadata, sandbox: SandboxMetadata, image: Image,
             infra_pid: int, target_pid: int, rootfs: Path | None, files: ImageFiles | None) -> ContainerSpecOptions:
    config = metadata.config
    sec = config.security
    ns = pod_namespaces(sandbox, sec.namespace_options.pid, infra_pid, target_pid)
    hostname = sandbox_hostname(sandbox.config)
    return ContainerSpecOptions(
        id=metadata.id,
        image=image.config,
        command=tuple(config.command) or None,
        args=tuple(config.args),
        env=tuple(f"{k}={v}" for k, v in config.envs),
        working_dir=config.working_dir,
        tty=config.tty,
        hostname=hostname,
        mounts=tuple(config.mounts),
        devices=tuple(config.devices),
        privileged=sec.privileged,
        sandbox_privileged=sandbox.config.privileged,
        add_capabilities=tuple(sec.capabilities_add),
        add_ambient_capabilities=tuple(sec.capabilities_add_ambient),
        drop_capabilities=tuple(sec.capabilities_drop),
        run_as_user=sec.run_as_user,
        run_as_group=sec.run_as_group,
        run_as_username=sec.run_as_username,
        supplemental_groups=tuple(sec.supplemental_groups),
        merge_image_groups=not sec.strict_supplemental_groups,
        readonly_rootfs=sec.readonly_rootfs,
        no_new_privs=sec.no_new_privs,
        masked_paths=tuple(sec.masked_paths) if sec.masked_paths is not None else None,
        readonly_paths=tuple(sec.readonly_paths) if sec.readonly_paths is not None else None,
        seccomp=sec.seccomp,
        apparmor=sec.apparmor,
        network=ns["network"],
        ipc=ns["ipc"],
        uts=ns["uts"],
        pid=ns["pid"],
        # The pod's sysctls ride on every container: with no infra process, the first container
        # start applies them to the pod's pinned namespaces (re-applying the same values is harmless).
        sysctls=sandbox.config.sysctls,
        resources=config.resources,
        rlimits=tuple(config.rlimits),
        cgroups_path=metadata.cgroups_path,
        cgroupns=sec.cgroupns,
        annotations={**config.annotations, "io.kubernetes.cri.container-type": "container",
                     "io.kubernetes.cri.sandbox-id": sandbox.id, **ctx.shim_group(sandbox.id)},
        sandbox_files=sandbox_files(ctx, sandbox),
        rootfs_path=rootfs,
        image_files=files,
        volumes_dir=ctx.container_root(metadata.id) / "volumes",
    )


@contextlib.asynccontextmanager
async def readonly_view(mounts: list[SnapshotMount]) -> AsyncIterator[Path | None]:
    """Mount a snapshot read-only in a temp dir for the duration (None if it cannot be viewed)."""
    if len(mounts) != 1:
        yield None
        return
    m = mounts[0]
    with tempfile.TemporaryDirectory(prefix="narwhal-view-") as tmp:
        target = Path(tmp)
        if m.type == "bind":
            mount(m.source, target, "", MS_BIND | MS_REC)
            mount("", target, "", MS_BIND | MS_REC | MS_RDONLY | 0x20)  # MS_REMOUNT
        else:
            options = [o for o in m.options if o not in ("rw", "ro")]
            mount(m.source, target, m.type, MS_RDONLY, ",".join(options))
        try:
            yield target
        finally:
            umount(target)


def process_user(spec: dict[str, Any]) -> ContainerUser | None:
    """The first process's uid, gid and additional gids from an OCI spec (None when it has no process)."""
    user = (spec.get("process") or {}).get("user")
    if not isinstance(user, dict):
        return None
    return ContainerUser(uid=int(user.get("uid", 0)), gid=int(user.get("gid", 0)),
                         supplemental_groups=tuple(int(g) for g in user.get("additionalGids") or ()))
