"""The specs pkg/runtime/spec.py builds really run under runc, and really confine.

Each test writes a bundle around a busybox rootfs (the layer of
hack/mkimage.py's image) and runs it with ``runc run`` in a private runc root,
under a private cgroup parent that is removed afterwards.
"""
from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import mkimage
import pytest

from pkg.images.model import ImageConfig
from pkg.runtime import caps
from pkg.runtime.resources import Resources, cgroups_path
from pkg.runtime.seccomp import RUNTIME_DEFAULT, UNCONFINED, ProfileType, SecurityProfile
from pkg.runtime.spec import build_container_spec, build_sandbox_spec
from pkg.runtime.spec_options import ContainerSpecOptions, Device, HostInfo, SandboxFiles, SandboxSpecOptions

RUNC = shutil.which("runc")
pytestmark = pytest.mark.skipif(RUNC is None, reason="runc is not installed")
CGROUP_ROOT = Path("/sys/fs/cgroup")


def _extract(image: mkimage.Image, dest: Path) -> None:
    dest.mkdir(parents=True)
    for layer in image.layers:
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer.data))) as tar:
            tar.extractall(dest, filter="fully_trusted")  # our own deterministic layer


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, ImageConfig]]:
    base = tmp_path_factory.mktemp("images")
    out = {}
    for kind in ("busybox", "pause"):
        image = mkimage.build(kind)
        _extract(image, base / kind)
        cfg = json.loads(image.config.data)["config"]
        out[kind] = (base / kind, ImageConfig(entrypoint=cfg.get("Entrypoint") or [], cmd=cfg.get("Cmd") or [],
                                              env=cfg.get("Env") or [], working_dir=cfg.get("WorkingDir", "")))
    return out


class Runc:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.root = base / "runc-root"
        self.parent = f"narwhal-spectest-{uuid.uuid4().hex[:8]}"
        self.ids: list[str] = []

    def bundle(self, spec: dict[str, Any], rootfs: Path) -> tuple[str, Path]:
        cid = f"spec-{uuid.uuid4().hex[:12]}"
        self.ids.append(cid)
        bundle = self.base / cid
        bundle.mkdir()
        spec = {**spec, "root": {**spec["root"], "path": str(rootfs)}}
        (bundle / "config.json").write_text(json.dumps(spec))
        return cid, bundle

    def run(self, spec: dict[str, Any], rootfs: Path) -> subprocess.CompletedProcess[str]:
        cid, bundle = self.bundle(spec, rootfs)
        return subprocess.run([str(RUNC), "--root", str(self.root), "run", "--bundle", str(bundle), cid],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)

    def runc(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(RUNC), "--root", str(self.root), *args], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=60)

    def cleanup(self) -> None:
        for cid in self.ids:
            self.runc("delete", "--force", cid)
        for controller in CGROUP_ROOT.iterdir():
            top = controller / self.parent
            if top.is_dir():
                for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: -w[0].count("/")):
                    os.rmdir(dirpath)


@pytest.fixture
def runc(tmp_path: Path) -> Iterator[Runc]:
    r = Runc(tmp_path)
    yield r
    r.cleanup()
    leftovers = [str(c / r.parent) for c in CGROUP_ROOT.iterdir() if (c / r.parent).exists()]
    assert not leftovers, f"cgroups left behind: {leftovers}"


def _opts(runc: Runc, image: ImageConfig, script: str, **kwargs: Any) -> ContainerSpecOptions:
    cid = f"c{uuid.uuid4().hex[:8]}"
    return ContainerSpecOptions(id=cid, image=image, command=("sh", "-c", script),
                                cgroups_path=cgroups_path(runc.parent, cid), **kwargs)


def _values(out: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def test_runtime_default_container_is_confined(runc: Runc, images: dict[str, tuple[Path, ImageConfig]],
                                               tmp_path: Path) -> None:
    rootfs, image = images["busybox"]
    files = tmp_path / "pod"
    files.mkdir()
    (files / "hostname").write_text("pod-a\n")
    (files / "hosts").write_text("127.0.0.1\tlocalhost\n10.0.0.9\tpod-a\n")
    (files / "resolv.conf").write_text("nameserver 10.0.0.53\n")
    script = (
        "echo capeff=$(grep CapEff /proc/self/status | cut -f2); "
        "unshare -U true 2>/dev/null; echo unshare=$?; "
        "echo hostname=$(cat /etc/hostname); echo dns=$(cat /etc/resolv.conf); "
        "echo hostenv=$HOSTNAME; echo oom=$(cat /proc/self/oom_score_adj); "
        "echo memlimit=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes); "
        "echo timers=$(wc -c < /proc/timer_list); "
        "echo 1 > /proc/sys/kernel/sysrq 2>/dev/null; echo procsys=$?; "
        "touch /tmp/ok; echo write=$?"
    )
    opts = _opts(runc, image, script, seccomp=RUNTIME_DEFAULT, hostname="pod-a",
                 drop_capabilities=("CHOWN", "NET_RAW"),
                 resources=Resources(memory_limit_in_bytes=64 << 20, oom_score_adj=-500),
                 sandbox_files=SandboxFiles(hostname_path=str(files / "hostname"), hosts_path=str(files / "hosts"),
                                            resolv_conf_path=str(files / "resolv.conf")))
    spec = build_container_spec(opts)
    result = runc.run(spec, rootfs)
    assert result.returncode == 0, result.stderr
    values = _values(result.stdout)
    expected = set(caps.DEFAULT_CAPS) - {"CAP_CHOWN", "CAP_NET_RAW"}
    assert caps.caps_from_mask(int(values["capeff"], 16)) == expected
    assert values["unshare"] != "0", "RuntimeDefault seccomp should block unshare(CLONE_NEWUSER)"
    assert values["hostname"] == "pod-a"
    assert values["dns"] == "nameserver 10.0.0.53"
    assert values["hostenv"] == "pod-a"
    assert int(values["oom"]) == max(-500, HostInfo.probe().oom_score_adj)
    assert values["memlimit"] == str(64 << 20)
    assert values["timers"] == "0"  # masked
    assert values["procsys"] != "0"  # read-only path
    assert values["write"] == "0"

    # The same request unconfined: unshare -U is allowed, so the block above was seccomp's doing.
    opts = replace(opts, id=opts.id + "u", seccomp=UNCONFINED, cgroups_path=cgroups_path(runc.parent, opts.id + "u"))
    result = runc.run(build_container_spec(opts), rootfs)
    assert result.returncode == 0, result.stderr
    assert _values(result.stdout)["unshare"] == "0"

    # RuntimeDefault with CAP_SYS_ADMIN added: the profile's capability-conditional rules open unshare.
    opts = replace(opts, id=opts.id + "a", seccomp=RUNTIME_DEFAULT, add_capabilities=("SYS_ADMIN",),
                   cgroups_path=cgroups_path(runc.parent, opts.id + "a"))
    result = runc.run(build_container_spec(opts), rootfs)
    assert result.returncode == 0, result.stderr
    assert _values(result.stdout)["unshare"] == "0"


def test_devices_and_image_volumes(runc: Runc, images: dict[str, tuple[Path, ImageConfig]], tmp_path: Path) -> None:
    rootfs, image = images["busybox"]
    script = ("echo dev=$(stat -c %t:%T /dev/mynull); echo hi > /dev/mynull; echo devwrite=$?; "
              "echo vol=$(ls -A /root/vol | wc -l); touch /root/vol/new; echo volwrite=$?")
    opts = _opts(runc, replace(image, volumes=["/root/vol"]), script, rootfs_path=rootfs,
                 volumes_dir=tmp_path / "volumes", readonly_rootfs=True,
                 devices=(Device("/dev/mynull", "/dev/null", "rw"),))
    result = runc.run(build_container_spec(opts), rootfs)
    assert result.returncode == 0, result.stderr
    values = _values(result.stdout)
    assert values["dev"] == "1:3" and values["devwrite"] == "0"
    assert values["vol"] == "0" and values["volwrite"] == "0"  # writable though the rootfs is not
    (volume,) = (tmp_path / "volumes").iterdir()
    assert [f.name for f in volume.iterdir()] == ["new"]


def test_user_readonly_rootfs_and_localhost_profile(runc: Runc, images: dict[str, tuple[Path, ImageConfig]],
                                                    tmp_path: Path) -> None:
    rootfs, image = images["busybox"]
    profile = tmp_path / "no-mkdir.json"
    profile.write_text(json.dumps({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}],
    }))
    script = ("echo uid=$(id -u); echo gid=$(id -g); echo groups=$(id -G); "
              "echo capeff=$(grep CapEff /proc/self/status | cut -f2); "
              "touch /newfile 2>/dev/null; echo rootwrite=$?; "
              "mkdir /proc/nope 2>&1; echo mkdir=$?; echo nnp=$(grep NoNewPrivs /proc/self/status | cut -f2)")
    opts = _opts(runc, image, script, run_as_username="nobody", supplemental_groups=(1234,), readonly_rootfs=True,
                 no_new_privs=True, rootfs_path=rootfs,
                 seccomp=SecurityProfile(ProfileType.LOCALHOST, str(profile)))
    result = runc.run(build_container_spec(opts), rootfs)
    assert result.returncode == 0, result.stderr
    values = _values(result.stdout)
    assert values["uid"] == "65534" and values["gid"] == "65534"
    assert "1234" in values["groups"].split()
    assert int(values["capeff"], 16) == 0
    assert values["rootwrite"] != "0"
    assert values["mkdir"] != "0"
    assert "Permission denied" in result.stdout  # errno 13 from the profile, not EROFS/EEXIST
    assert values["nnp"] == "1"


def test_ambient_capabilities_survive_exec_as_non_root(runc: Runc,
                                                        images: dict[str, tuple[Path, ImageConfig]]) -> None:
    rootfs, image = images["busybox"]
    opts = _opts(runc, image, "echo capeff=$(grep CapEff /proc/self/status | cut -f2)", run_as_user=65534,
                 rootfs_path=rootfs, drop_capabilities=("ALL",), add_ambient_capabilities=("NET_BIND_SERVICE",))
    result = runc.run(build_container_spec(opts), rootfs)
    assert result.returncode == 0, result.stderr
    assert caps.caps_from_mask(int(_values(result.stdout)["capeff"], 16)) == {"CAP_NET_BIND_SERVICE"}


def test_privileged_container_has_all_daemon_caps(runc: Runc, images: dict[str, tuple[Path, ImageConfig]]) -> None:
    rootfs, image = images["busybox"]
    script = ("echo capeff=$(grep CapEff /proc/self/status | cut -f2); unshare -U true; echo unshare=$?; "
              "echo timers=$(wc -c < /proc/timer_list)")
    opts = _opts(runc, image, script, privileged=True, seccomp=RUNTIME_DEFAULT)
    result = runc.run(build_container_spec(opts), rootfs)
    assert result.returncode == 0, result.stderr
    values = _values(result.stdout)
    assert caps.caps_from_mask(int(values["capeff"], 16)) == HostInfo.probe().capabilities
    assert values["unshare"] == "0"
    assert int(values["timers"]) > 0  # nothing masked


def test_sandbox_spec_runs_pause(runc: Runc, images: dict[str, tuple[Path, ImageConfig]]) -> None:
    rootfs, image = images["pause"]
    sid = f"s{uuid.uuid4().hex[:8]}"
    spec = build_sandbox_spec(SandboxSpecOptions(id=sid, image=image, hostname="pod-b", seccomp=RUNTIME_DEFAULT,
                                                 cgroups_path=cgroups_path(runc.parent, sid)))
    cid, bundle = runc.bundle(spec, rootfs)
    # The container inherits runc's stdio: give it files, not pipes we would wait on.
    with open(bundle / "stderr", "w+") as err:
        started = subprocess.run([str(RUNC), "--root", str(runc.root), "run", "--detach", "--bundle", str(bundle),
                                  cid], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, timeout=60)
    assert started.returncode == 0, (bundle / "stderr").read_text()
    state = json.loads(runc.runc("state", cid).stdout)
    assert state["status"] == "running"
    assert Path(f"/proc/{state['pid']}/cmdline").read_bytes().split(b"\0")[:2] == [b"/catatonit", b"-P"]
    assert runc.runc("kill", cid, "KILL").returncode == 0
