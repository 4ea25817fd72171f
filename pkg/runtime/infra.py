"""The pod infra container: ``catatonit -P`` holding the pod's PID namespace.

Only pods that share one PID namespace need it (network, IPC and UTS are
pinned without a process).  Its rootfs is built locally from Debian's
statically linked catatonit into ``<root>/pause/rootfs`` — the same content
as the pause image hack/mkimage.py builds — so no registry is ever needed.
"""
from __future__ import annotations

import shutil
import signal
from pathlib import Path
from typing import Any

from pkg import errors
from pkg.containerd import tasks as ctr_tasks
from pkg.images.model import ImageConfig
from pkg.model.sandbox import SandboxMetadata
from pkg.runtime import container_spec, spec
from pkg.runtime.container_release import remove_cgroup_quietly
from pkg.runtime.context import RuntimeContext
from pkg.runtime.resources import cgroups_path
from pkg.runtime.spec_options import Namespace, SandboxSpecOptions

IMAGE_NAME = "narwhal.local/pause:catatonit"
CATATONIT = Path("/usr/bin/catatonit")
PAUSE_CONFIG = ImageConfig(entrypoint=["/catatonit", "-P"], env=["PATH=/usr/sbin:/usr/bin:/sbin:/bin"])
STOP_WAIT = 10.0


def pause_rootfs(ctx: RuntimeContext) -> Path:
    """The read-only pause rootfs, created once per instance."""
    rootfs = ctx.cfg.root / "pause" / "rootfs"
    binary = rootfs / "catatonit"
    if not binary.exists():
        if not CATATONIT.exists():
            raise errors.FailedPrecondition(f"{CATATONIT} is missing (Debian package catatonit): run `make setup`")
        (rootfs / "etc").mkdir(parents=True, exist_ok=True)
        for d in ("proc", "sys", "dev"):
            (rootfs / d).mkdir(exist_ok=True)
        (rootfs / "etc" / "passwd").write_text("root:x:0:0:root:/:/catatonit\n")
        (rootfs / "etc" / "group").write_text("root:x:0:\n")
        tmp = rootfs / ".catatonit.tmp"
        shutil.copy2(CATATONIT, tmp)
        tmp.rename(binary)
    return rootfs


def sandbox_spec(ctx: RuntimeContext, metadata: SandboxMetadata) -> dict[str, Any]:
    """Reads host and rootfs files: call it through asyncio.to_thread."""
    rootfs = pause_rootfs(ctx)
    c = metadata.config
    files = container_spec.sandbox_files(ctx, metadata)
    opts = SandboxSpecOptions(
        id=metadata.id,
        image=PAUSE_CONFIG,
        hostname=container_spec.sandbox_hostname(c),
        network=Namespace.join(metadata.netns_path) if metadata.netns_path else Namespace.host(),
        ipc=Namespace.join(metadata.ipc_path) if metadata.ipc_path else Namespace.host(),
        uts=Namespace.join(metadata.uts_path) if metadata.uts_path else Namespace.host(),
        pid=Namespace.new(),
        run_as_user=c.run_as_user,
        run_as_group=c.run_as_group,
        supplemental_groups=tuple(c.supplemental_groups),
        privileged=c.privileged,
        seccomp=c.seccomp,
        sysctls=c.sysctls,
        cgroups_path=cgroups_path(metadata.cgroup_parent, metadata.id),
        annotations={"io.kubernetes.cri.container-type": "sandbox", "io.kubernetes.cri.sandbox-id": metadata.id,
                     **ctx.shim_group(metadata.id)},
        shm_path=files.shm_path if files.shm_path != "/dev/shm" else "",
        resolv_conf_path=files.resolv_conf_path,
        rootfs_path=rootfs,
        root_path=str(rootfs),
    )
    return spec.build_sandbox_spec(opts)


async def start(ctx: RuntimeContext, metadata: SandboxMetadata) -> int:
    await ctr_tasks.create(ctx.client, metadata.id, [])
    return await ctr_tasks.start(ctx.client, metadata.id)


async def stop(ctx: RuntimeContext, metadata: SandboxMetadata) -> None:
    """Kill and delete the infra task and its cgroup; idempotent."""
    sandbox_id = metadata.id
    task = await ctr_tasks.get(ctx.client, sandbox_id)
    if task is None:
        return
    if task.status != ctr_tasks.TaskStatus.STOPPED:
        await ctr_tasks.kill(ctx.client, sandbox_id, signal.SIGKILL, all_=True)
        try:
            await ctr_tasks.wait(ctx.client, sandbox_id, timeout=STOP_WAIT)
        except (TimeoutError, errors.NotFound, errors.DeadlineExceeded):
            pass
    await ctr_tasks.delete(ctx.client, sandbox_id)
    await remove_cgroup_quietly(cgroups_path(metadata.cgroup_parent, sandbox_id))
