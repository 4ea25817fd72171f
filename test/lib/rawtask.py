"""Containers and tasks straight on containerd (no narwhald logic): a busybox rootfs directory and a minimal spec.

For tests of building blocks that the runtime will call (the shim-run
logger, cgroup stats, OOM detection) without going through the CRI.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import any_pb2

from lib.ctrtask import extract_rootfs
from pkg import errors
from pkg.containerd.api.runtime.v2.runc.options import oci_pb2
from pkg.containerd.api.services.containers.v1 import containers_pb2
from pkg.containerd.api.services.tasks.v1 import tasks_pb2
from pkg.containerd.client import Client
from pkg.containerd.errors import translate

SPEC_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Spec"


def busybox_rootfs(target: Path) -> Path:
    """Unpack hack/mkimage.py's busybox layer into ``target`` (built once per session, see lib.ctrtask)."""
    extract_rootfs(target)
    return target


def minimal_spec(rootfs: Path, args: list[str], cgroups_path: str, memory_limit: int | None = None) -> dict[str, Any]:
    resources: dict[str, Any] = {"devices": [{"allow": False, "access": "rwm"}]}
    if memory_limit is not None:
        resources["memory"] = {"limit": memory_limit, "swap": memory_limit}
    caps = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_KILL", "CAP_SETGID", "CAP_SETUID"]
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
            "cwd": "/",
            "capabilities": {k: caps for k in ("bounding", "effective", "permitted")},
            "noNewPrivileges": True,
        },
        "root": {"path": str(rootfs), "readonly": True},
        "hostname": "rawtask",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime",
                                                                                   "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev"]},
        ],
        "linux": {
            "cgroupsPath": cgroups_path,
            "resources": resources,
            "namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount", "network")],
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/sys/firmware"],
            "readonlyPaths": ["/proc/sys", "/proc/sysrq-trigger"],
        },
    }


@dataclass
class RawTask:
    client: Client
    id: str
    pid: int

    async def wait(self, timeout: float = 30.0) -> int:
        with translate("wait task"):
            resp = await self.client.tasks.Wait(tasks_pb2.WaitRequest(container_id=self.id), timeout=timeout)
        return int(resp.exit_status)

    async def destroy(self) -> None:
        """Kill, wait, delete the task and the container record; every step tolerates absence."""
        with contextlib.suppress(errors.NotFound, errors.FailedPrecondition), translate("kill task"):
            await self.client.tasks.Kill(tasks_pb2.KillRequest(container_id=self.id, signal=9, all=True), timeout=10)
        with contextlib.suppress(errors.NotFound, errors.DeadlineExceeded, asyncio.TimeoutError):
            await self.wait(timeout=20)
        with contextlib.suppress(errors.NotFound), translate("delete task"):
            await self.client.tasks.Delete(tasks_pb2.DeleteTaskRequest(container_id=self.id), timeout=30)
        with contextlib.suppress(errors.NotFound), translate("delete container"):
            await self.client.containers.Delete(containers_pb2.DeleteContainerRequest(id=self.id), timeout=30)


async def create_task(client: Client, id_: str, spec: dict[str, Any], runc_root: Path, stdio_uri: str,
                      *, start: bool = True, terminal: bool = False) -> RawTask:
    """A container record plus its task with ``stdio_uri`` as stdout and stderr (a binary:// logger)."""
    options = oci_pb2.Options(root=str(runc_root))
    container = containers_pb2.Container(
        id=id_,
        runtime=containers_pb2.Container.Runtime(
            name="io.containerd.runc.v2",
            options=any_pb2.Any(type_url="containerd.runc.v1.Options", value=options.SerializeToString()),
        ),
        spec=any_pb2.Any(type_url=SPEC_TYPE_URL, value=json.dumps(spec).encode()),
    )
    with translate("create container"):
        await client.containers.Create(containers_pb2.CreateContainerRequest(container=container), timeout=30)
    task = RawTask(client, id_, 0)
    try:
        with translate("create task"):
            resp = await client.tasks.Create(
                tasks_pb2.CreateTaskRequest(container_id=id_, stdout=stdio_uri, stderr="" if terminal else stdio_uri,
                                            terminal=terminal),
                timeout=60,
            )
        task.pid = resp.pid
        if start:
            await start_task(task)
    except BaseException:
        await task.destroy()
        raise
    return task


async def start_task(task: RawTask) -> None:
    with translate("start task"):
        await task.client.tasks.Start(tasks_pb2.StartRequest(container_id=task.id), timeout=30)
