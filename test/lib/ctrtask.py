"""A running containerd task made directly, without Narwhal's runtime: for exec and streaming tests.

The busybox layer from hack/mkimage.py is extracted into a directory used as
an absolute ``root.path`` of a minimal OCI spec, run by the runc v2 shim with
its state under the daemon's state dir.  Objects live in their own
containerd namespace, so nothing Narwhal does can collide with them.
"""
from __future__ import annotations

import asyncio
import contextlib
import gzip
import io
import json
import secrets
import shutil
import signal
import tarfile
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import any_pb2

from pkg.containerd.api.runtime.v2.runc.options import oci_pb2
from pkg.containerd.api.services.containers.v1 import containers_pb2
from pkg.containerd.api.services.tasks.v1 import tasks_pb2
from pkg.containerd.client import Client

NAMESPACE = "nwtest"
SPEC_TYPE = "types.containerd.io/opencontainers/runtime-spec/1/Spec"
_ROOTFS_CACHE: dict[str, bytes] = {}


def busybox_layer() -> bytes:
    if "busybox" not in _ROOTFS_CACHE:
        import mkimage  # hack/, on sys.path via test/conftest.py

        image = mkimage.build("busybox")
        _ROOTFS_CACHE["busybox"] = gzip.decompress(image.layers[0].data)
    return _ROOTFS_CACHE["busybox"]


def extract_rootfs(dest: Path) -> None:
    dest.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(busybox_layer())) as tar:
        tar.extractall(dest, filter="tar")


def minimal_spec(rootfs: Path, args: list[str], netns: Path | None = None) -> dict[str, object]:
    caps = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_KILL", "CAP_SETGID", "CAP_SETUID",
            "CAP_NET_BIND_SERVICE"]
    namespaces: list[dict[str, str]] = [{"type": t} for t in ("pid", "ipc", "uts", "mount")]
    namespaces.append({"type": "network", "path": str(netns)} if netns else {"type": "network"})
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False, "user": {"uid": 0, "gid": 0}, "args": args, "cwd": "/",
            "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"],
            "capabilities": {k: caps for k in ("bounding", "effective", "permitted")},
            "noNewPrivileges": True,
        },
        "root": {"path": str(rootfs), "readonly": False},
        "hostname": "nwtest",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime",
                                                                                     "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev",
                                                                                     "ro"]},
        ],
        "linux": {"namespaces": namespaces, "maskedPaths": ["/proc/kcore"], "readonlyPaths": ["/proc/sys"]},
    }


@dataclass
class RunningTask:
    client: Client
    container_id: str
    base: Path
    pid: int
    runc_root: Path

    async def pids(self) -> list[int]:
        resp = await self.client.tasks.ListPids(tasks_pb2.ListPidsRequest(container_id=self.container_id))
        return [p.pid for p in resp.processes]

    async def destroy(self) -> None:
        """Kill and delete through containerd; if that fails (a broken test), make runc do it, so no
        container process, shim state or cgroup outlives the test."""
        with contextlib.suppress(Exception):
            await self.client.tasks.Kill(tasks_pb2.KillRequest(container_id=self.container_id,
                                                               signal=signal.SIGKILL, all=True))
            await asyncio.wait_for(self.client.tasks.Wait(tasks_pb2.WaitRequest(container_id=self.container_id)), 20)
        with contextlib.suppress(Exception):
            await self.client.tasks.Delete(tasks_pb2.DeleteTaskRequest(container_id=self.container_id))
        with contextlib.suppress(Exception):
            await self.client.containers.Delete(containers_pb2.DeleteContainerRequest(id=self.container_id))
        runc = await asyncio.create_subprocess_exec(
            "runc", "--root", str(self.runc_root / NAMESPACE), "delete", "--force", self.container_id,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        await runc.wait()  # fails harmlessly when containerd already deleted it
        await asyncio.to_thread(shutil.rmtree, self.base, True)


async def start_task(client: Client, work_dir: Path, runc_root: Path, args: list[str] | None = None,
                     netns: Path | None = None) -> RunningTask:
    container_id = "nwtest-" + secrets.token_hex(6)
    base = work_dir / container_id
    await asyncio.to_thread(extract_rootfs, base / "rootfs")
    spec = minimal_spec(base / "rootfs", args or ["sleep", "3600"], netns)
    options = any_pb2.Any(type_url="containerd.runc.v1.Options",
                          value=oci_pb2.Options(root=str(runc_root)).SerializeToString())
    container = containers_pb2.Container(
        id=container_id,
        runtime=containers_pb2.Container.Runtime(name="io.containerd.runc.v2", options=options),
        spec=any_pb2.Any(type_url=SPEC_TYPE, value=json.dumps(spec).encode()),
    )
    await client.containers.Create(containers_pb2.CreateContainerRequest(container=container))
    task = RunningTask(client, container_id, base, 0, runc_root)
    try:
        created = await client.tasks.Create(tasks_pb2.CreateTaskRequest(container_id=container_id))
        task.pid = created.pid
        await client.tasks.Start(tasks_pb2.StartRequest(container_id=container_id))
    except BaseException:
        await task.destroy()
        raise
    return task
