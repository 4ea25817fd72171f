"""build_container_spec / build_sandbox_spec: containerd's CRI rules, checked on the generated dicts."""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pkg.errors import InvalidArgument, NotFound
from pkg.images.model import ImageConfig
from pkg.runtime import caps
from pkg.runtime.resources import CgroupFacts, Resources, Rlimit
from pkg.runtime.seccomp import RUNTIME_DEFAULT, UNCONFINED, ProfileType, SecurityProfile
from pkg.runtime.spec import build_container_spec, build_sandbox_spec, merge_env, process_args
from pkg.runtime.spec_mounts import DEFAULT_MASKED_PATHS, DEFAULT_READONLY_PATHS
from pkg.runtime.spec_options import (
    ContainerSpecOptions,
    Device,
    HostInfo,
    Mount,
    Namespace,
    Propagation,
    SandboxFiles,
    SandboxSpecOptions,
)

IMAGE = ImageConfig(entrypoint=["/entry"], cmd=["--serve"], env=["PATH=/image/bin", "A=image"], working_dir="/srv")


@pytest.fixture
def host(tmp_path: Path) -> HostInfo:
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/root rw\n"
        "30 22 0:26 / /mnt/private rw - tmpfs tmpfs rw\n"
        "31 22 0:27 / /mnt/slave rw master:5 - tmpfs tmpfs rw\n"
        "32 22 0:28 / /mnt/with\\040space rw shared:9 - tmpfs tmpfs rw\n"
    )
    dev = tmp_path / "dev"
    dev.mkdir()
    return HostInfo(capabilities=frozenset(caps.ALL_CAPS) - {"CAP_SYS_RESOURCE"}, oom_score_adj=-100,
                    cgroups=CgroupFacts(v2=False, swap=True, hugetlb=True), arch="amd64", kernel=(6, 1),
                    mountinfo=mountinfo, dev_root=dev, rlimits_hard={"RLIMIT_NOFILE": 20000})


def build(host: HostInfo, **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("image", IMAGE)
    return build_container_spec(ContainerSpecOptions(id="c1", **kwargs), host)


def mount_at(spec: dict[str, Any], dest: str) -> dict[str, Any] | None:
    return next((m for m in spec["mounts"] if m["destination"] == dest), None)


def mount(spec: dict[str, Any], dest: str) -> dict[str, Any]:
    """The mount at ``dest``, which the spec must have."""
    found = mount_at(spec, dest)
    assert found is not None, f"no mount at {dest}"
    return found


# ---- command, env, working dir (image config merge) ----
@pytest.mark.parametrize(("command", "args", "image", "expected"), [
    (None, (), IMAGE, ["/entry", "--serve"]),
    (None, ("--debug",), IMAGE, ["/entry", "--debug"]),
    (("/bin/sh",), (), IMAGE, ["/bin/sh"]),
    (("/bin/sh",), ("-c", "true"), IMAGE, ["/bin/sh", "-c", "true"]),
    ((), ("ls",), IMAGE, ["ls"]),  # an explicitly empty command clears the entrypoint
    (None, (), ImageConfig(entrypoint=[""], cmd=["run"]), ["run"]),
    (None, (), ImageConfig(cmd=["sh"]), ["sh"]),
    (None, (), ImageConfig(entrypoint=["/pause"]), ["/pause"]),
])
def test_process_args(command: tuple[str, ...] | None, args: tuple[str, ...], image: ImageConfig,
                      expected: list[str]) -> None:
    assert process_args(command, args, image) == expected


def test_no_command_at_all_is_invalid() -> None:
    with pytest.raises(InvalidArgument, match="no command"):
        process_args(None, (), ImageConfig())


def test_env_merge_order_and_overrides(host: HostInfo) -> None:
    spec = build(host, env=("A=request", "B=2", "A=last"), hostname="pod", tty=True)
    assert spec["process"]["env"] == ["PATH=/image/bin", "TERM=xterm", "HOSTNAME=pod", "A=last", "B=2"]


def test_env_default_path_and_unset() -> None:
    assert merge_env(["PATH=/bin", "X=1"], ["X", "Y=a=b"]) == ["PATH=/bin", "Y=a=b"]
    with pytest.raises(InvalidArgument):
        merge_env([], ["=value"])


def test_default_path_when_image_has_none(host: HostInfo) -> None:
    spec = build(host, image=ImageConfig(cmd=["sh"]))
    assert spec["process"]["env"][0].startswith("PATH=/usr/local/sbin:")
    assert spec["process"]["cwd"] == "/"


def test_working_dir_request_then_image(host: HostInfo) -> None:
    assert build(host)["process"]["cwd"] == "/srv"
    assert build(host, working_dir="/work")["process"]["cwd"] == "/work"
    with pytest.raises(InvalidArgument, match="absolute"):
        build(host, working_dir="relative")


# ---- capabilities, privileged ----
def test_default_caps_everywhere(host: HostInfo) -> None:
    capset = build(host)["process"]["capabilities"]
    assert set(capset) == {"bounding", "effective", "permitted"}  # no inheritable, no ambient
    for value in capset.values():
        assert set(value) == set(caps.DEFAULT_CAPS)


def test_add_all_drop_one(host: HostInfo) -> None:
    spec = build(host, add_capabilities=("ALL",), drop_capabilities=("CHOWN",))
    got = set(spec["process"]["capabilities"]["bounding"])
    assert got == set(caps.ALL_CAPS) - {"CAP_CHOWN", "CAP_SYS_RESOURCE"}


def test_drop_all_add_one(host: HostInfo) -> None:
    got = build(host, add_capabilities=("net_admin",), drop_capabilities=("ALL",))["process"]["capabilities"]
    assert got["effective"] == ["CAP_NET_ADMIN"]


def test_unknown_capability_is_invalid(host: HostInfo) -> None:
    with pytest.raises(InvalidArgument, match="FLY"):
        build(host, add_capabilities=("FLY",))


def test_capability_the_daemon_lacks_is_not_granted(host: HostInfo) -> None:
    got = build(host, add_capabilities=("SYS_RESOURCE", "CAP_SYS_ADMIN"))["process"]["capabilities"]["bounding"]
    assert "CAP_SYS_ADMIN" in got and "CAP_SYS_RESOURCE" not in got


def test_privileged(host: HostInfo, tmp_path: Path) -> None:
    spec = build(host, privileged=True, seccomp=RUNTIME_DEFAULT, drop_capabilities=("ALL",),
                 masked_paths=("/proc/x",))
    assert set(spec["process"]["capabilities"]["bounding"]) == host.capabilities
    assert "seccomp" not in spec["linux"]
    assert "maskedPaths" not in spec["linux"] and "readonlyPaths" not in spec["linux"]
    assert spec["linux"]["resources"]["devices"] == [{"allow": True, "access": "rwm"}]
    assert "rw" in mount(spec, "/sys")["options"]
    assert "rw" in mount(spec, "/sys/fs/cgroup")["options"]


def test_privileged_needs_privileged_sandbox(host: HostInfo) -> None:
    with pytest.raises(InvalidArgument, match="privileged"):
        build(host, privileged=True, sandbox_privileged=False)


def test_unprivileged_sysfs_and_cgroup_readonly(host: HostInfo) -> None:
    spec = build(host)
    assert "ro" in mount(spec, "/sys")["options"]
    assert "ro" in mount(spec, "/sys/fs/cgroup")["options"]
    assert mount_at(spec, "/run") is None  # CRI drops containerd's /run tmpfs


# ---- masked and readonly paths ----
def test_masked_paths_default_and_override(host: HostInfo) -> None:
    spec = build(host)
    assert spec["linux"]["maskedPaths"] == list(DEFAULT_MASKED_PATHS)
    assert spec["linux"]["readonlyPaths"] == list(DEFAULT_READONLY_PATHS)
    spec = build(host, masked_paths=("/proc/a",), readonly_paths=())
    assert spec["linux"]["maskedPaths"] == ["/proc/a"]
    assert spec["linux"]["readonlyPaths"] == []


# ---- seccomp and apparmor ----
def test_seccomp_selection(host: HostInfo, tmp_path: Path) -> None:
    assert "seccomp" not in build(host)["linux"]
    assert "seccomp" not in build(host, seccomp=UNCONFINED)["linux"]
    default = build(host, seccomp=RUNTIME_DEFAULT)["linux"]["seccomp"]
    assert default["defaultAction"] == "SCMP_ACT_ERRNO"
    profile = tmp_path / "p.json"
    profile.write_text('{"defaultAction": "SCMP_ACT_LOG"}')
    local = build(host, seccomp=SecurityProfile(ProfileType.LOCALHOST, str(profile)))["linux"]["seccomp"]
    assert local == {"defaultAction": "SCMP_ACT_LOG"}
    with pytest.raises(NotFound):
        build(host, seccomp=SecurityProfile(ProfileType.LOCALHOST, str(tmp_path / "missing.json")))


def test_runtime_default_follows_final_caps(host: HostInfo) -> None:
    def allowed(spec: dict[str, Any]) -> set[str]:
        return {n for r in spec["linux"]["seccomp"]["syscalls"] if r["action"] == "SCMP_ACT_ALLOW" and "args" not in r
                for n in r["names"]}

    assert "mount" not in allowed(build(host, seccomp=RUNTIME_DEFAULT))
    assert "mount" in allowed(build(host, seccomp=RUNTIME_DEFAULT, add_capabilities=("SYS_ADMIN",)))
    assert "chroot" not in allowed(build(host, seccomp=RUNTIME_DEFAULT, drop_capabilities=("SYS_CHROOT",)))


def test_apparmor(host: HostInfo) -> None:
    assert "apparmorProfile" not in build(host, apparmor=RUNTIME_DEFAULT)["process"]
    with pytest.raises(InvalidArgument, match="AppArmor"):
        build(host, apparmor=SecurityProfile(ProfileType.LOCALHOST, "my-profile"))
    enabled = replace(host, apparmor=True)
    spec = build(enabled, apparmor=SecurityProfile(ProfileType.LOCALHOST, "localhost/my-profile"))
    assert spec["process"]["apparmorProfile"] == "my-profile"


# ---- user ----
def test_user_from_request_and_image(host: HostInfo, tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n")
    (rootfs / "etc" / "group").write_text("app:x:1001:\nextra:x:2000:app\n")
    image = replace(IMAGE, user="app")
    assert build(host, image=image, rootfs_path=rootfs)["process"]["user"] == {
        "uid": 1000, "gid": 1001, "additionalGids": [1001, 2000]}
    spec = build(host, image=image, rootfs_path=rootfs, run_as_user=0, supplemental_groups=(5,))
    assert spec["process"]["user"] == {"uid": 0, "gid": 0, "additionalGids": [0, 5]}
    spec = build(host, rootfs_path=rootfs, run_as_username="app", run_as_group=7, merge_image_groups=False)
    assert spec["process"]["user"] == {"uid": 1000, "gid": 7, "additionalGids": [7]}
    with pytest.raises(InvalidArgument, match="run_as_group"):
        build(host, run_as_group=7)
    with pytest.raises(InvalidArgument, match="ghost"):
        build(host, rootfs_path=rootfs, run_as_username="ghost")


# ---- namespaces, sysctls, hostname ----
def test_pod_namespaces(host: HostInfo) -> None:
    spec = build(host, network=Namespace.join("/run/netns/pod"), ipc=Namespace.join("/run/ipc/pod"),
                 uts=Namespace.join("/run/uts/pod"), pid=Namespace.new(), hostname="pod")
    assert spec["linux"]["namespaces"] == [
        {"type": "pid"}, {"type": "ipc", "path": "/run/ipc/pod"}, {"type": "uts", "path": "/run/uts/pod"},
        {"type": "mount"}, {"type": "network", "path": "/run/netns/pod"}]
    assert "hostname" not in spec  # the pod's UTS namespace already has it


def test_host_namespaces_are_left_out(host: HostInfo) -> None:
    spec = build(host, network=Namespace.host(), ipc=Namespace.host(), uts=Namespace.host(), pid=Namespace.host(),
                 hostname="node")
    assert spec["linux"]["namespaces"] == [{"type": "mount"}]
    assert "hostname" not in spec


def test_cgroup_namespace_only_on_v2_unprivileged(host: HostInfo) -> None:
    v2 = replace(host, cgroups=CgroupFacts(v2=True))
    assert {"type": "cgroup"} in build(v2)["linux"]["namespaces"]
    assert {"type": "cgroup"} not in build(v2, privileged=True)["linux"]["namespaces"]
    assert {"type": "cgroup"} not in build(host)["linux"]["namespaces"]


def test_standalone_container_gets_hostname(host: HostInfo) -> None:
    assert build(host, hostname="box")["hostname"] == "box"


def test_join_path_must_be_absolute(host: HostInfo) -> None:
    with pytest.raises(InvalidArgument):
        build(host, network=Namespace.join("netns"))


@pytest.mark.parametrize(("sysctls", "kwargs", "ok"), [
    ({"net.ipv4.ip_forward": "1"}, {}, True),
    ({"net.ipv4.ip_forward": "1"}, {"network": Namespace.host()}, False),
    ({"kernel.shmmax": "1000"}, {}, True),
    ({"kernel.shmmax": "1000"}, {"ipc": Namespace.host()}, False),
    ({"fs.mqueue.msg_max": "10"}, {"ipc": Namespace.host()}, False),
    ({"kernel.domainname": "x"}, {"uts": Namespace.host()}, False),
    ({"vm.swappiness": "10"}, {}, False),
    ({"net/ipv4/ip_forward": "1"}, {}, True),
    ({"net.ipv4.ip_forward\n": "1"}, {}, False),
])
def test_sysctls(host: HostInfo, sysctls: dict[str, str], kwargs: dict[str, Any], ok: bool) -> None:
    if ok:
        assert build(host, sysctls=sysctls, **kwargs)["linux"]["sysctl"] == sysctls
    else:
        with pytest.raises(InvalidArgument, match="sysctl"):
            build(host, sysctls=sysctls, **kwargs)


# ---- mounts ----
def test_mounts_sorted_and_options(host: HostInfo, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    spec = build(host, mounts=(Mount("/data/deep", str(b), readonly=True), Mount("/data", str(a))))
    binds = [m for m in spec["mounts"] if m["type"] == "bind"]
    assert [m["destination"] for m in binds] == ["/data", "/data/deep"]
    assert binds[0] == {"destination": "/data", "type": "bind", "source": str(a),
                        "options": ["rbind", "rprivate", "rw"]}
    assert binds[1]["options"] == ["rbind", "rprivate", "ro"]


def test_missing_host_path_is_created_or_refused(host: HostInfo, tmp_path: Path) -> None:
    src = tmp_path / "new" / "dir"
    build(host, mounts=(Mount("/x", str(src)),))
    assert src.is_dir()
    with pytest.raises(NotFound):
        build(host, mounts=(Mount("/x", str(tmp_path / "other")),), create_missing_host_paths=False)


def test_symlinked_host_path_is_resolved(host: HostInfo, tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    spec = build(host, mounts=(Mount("/x", str(tmp_path / "link")),))
    assert mount(spec, "/x")["source"] == str(tmp_path / "real")


def test_bad_mounts(host: HostInfo, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="absolute"):
        build(host, mounts=(Mount("relative", str(tmp_path)),))
    with pytest.raises(InvalidArgument, match="absolute"):
        build(host, mounts=(Mount("/x", "relative"),))
    with pytest.raises(InvalidArgument, match="propagation"):
        build(host, mounts=(Mount("/x", str(tmp_path), propagation=7),))  # type: ignore[arg-type]


def test_propagation(host: HostInfo, tmp_path: Path) -> None:
    shared = build(host, mounts=(Mount("/x", "/", propagation=Propagation.BIDIRECTIONAL),))
    assert "rshared" in mount(shared, "/x")["options"]
    assert shared["linux"]["rootfsPropagation"] == "rshared"
    with pytest.raises(InvalidArgument, match="not a shared mount"):
        build(host, mounts=(Mount("/x", "/mnt/private", propagation=Propagation.BIDIRECTIONAL),))
    with pytest.raises(InvalidArgument, match="not a shared mount"):
        build(host, mounts=(Mount("/x", "/mnt/slave", propagation=Propagation.BIDIRECTIONAL),))
    slave = build(host, mounts=(Mount("/x", "/mnt/slave", propagation=Propagation.HOST_TO_CONTAINER),))
    assert "rslave" in mount(slave, "/x")["options"]
    assert slave["linux"]["rootfsPropagation"] == "rslave"
    with pytest.raises(InvalidArgument, match="shared or slave"):
        build(host, mounts=(Mount("/x", "/mnt/private", propagation=Propagation.HOST_TO_CONTAINER),))
    assert "rootfsPropagation" not in build(host, mounts=(Mount("/x", "/mnt/private"),))["linux"]


def test_recursive_read_only(host: HostInfo, tmp_path: Path) -> None:
    spec = build(host, mounts=(Mount("/x", str(tmp_path), readonly=True, recursive_read_only=True),))
    assert mount(spec, "/x")["options"] == ["rbind", "rprivate", "rro"]
    with pytest.raises(InvalidArgument, match="read-only"):
        build(host, mounts=(Mount("/x", str(tmp_path), recursive_read_only=True),))


def test_sandbox_files(host: HostInfo, tmp_path: Path) -> None:
    for name in ("hostname", "hosts", "resolv.conf", "shm"):
        (tmp_path / name).touch()
    files = SandboxFiles(hostname_path=str(tmp_path / "hostname"), hosts_path=str(tmp_path / "hosts"),
                         resolv_conf_path=str(tmp_path / "resolv.conf"), shm_path=str(tmp_path / "shm"))
    spec = build(host, sandbox_files=files, readonly_rootfs=True)
    assert spec["root"]["readonly"] is True
    for dest in ("/etc/hostname", "/etc/hosts", "/etc/resolv.conf"):
        assert mount(spec, dest)["options"][-1] == "ro"
    shm = [m for m in spec["mounts"] if m["destination"] == "/dev/shm"]
    assert shm == [{"destination": "/dev/shm", "type": "bind", "source": str(tmp_path / "shm"),
                    "options": ["rbind", "rprivate", "rw"]}]  # replaces the default tmpfs
    own = tmp_path / "myhosts"
    own.touch()
    spec = build(host, sandbox_files=files, mounts=(Mount("/etc/hosts", str(own)),))
    assert [m["source"] for m in spec["mounts"] if m["destination"] == "/etc/hosts"] == [str(own)]
    assert mount(spec, "/etc/hostname")["options"][-1] == "rw"


def test_bind_over_dev_drops_dev_defaults(host: HostInfo, tmp_path: Path) -> None:
    spec = build(host, mounts=(Mount("/dev", str(tmp_path)),))
    assert not [m for m in spec["mounts"] if m["destination"].startswith("/dev/")]


# ---- devices ----
def test_devices(host: HostInfo) -> None:
    spec = build(host, devices=(Device("/dev/mynull", "/dev/null", "rw"),))
    assert spec["linux"]["devices"] == [{"path": "/dev/mynull", "type": "c", "major": 1, "minor": 3,
                                         "fileMode": 0o666, "uid": 0, "gid": 0}]
    assert spec["linux"]["resources"]["devices"] == [
        {"allow": False, "access": "rwm"}, {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"}]


def test_bad_devices(host: HostInfo, tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        build(host, devices=(Device("/dev/x", str(tmp_path / "nope")),))
    (tmp_path / "file").touch()
    with pytest.raises(InvalidArgument, match="not a device"):
        build(host, devices=(Device("/dev/x", str(tmp_path / "file")),))
    with pytest.raises(InvalidArgument, match="rwm"):
        build(host, devices=(Device("/dev/x", "/dev/null", "rwx"),))


# ---- resources, oom, rlimits, cgroups ----
def test_resources_and_clamps(host: HostInfo) -> None:
    spec = build(host, resources=Resources(cpu_shares=512, cpu_quota=50000, cpu_period=100000,
                                           memory_limit_in_bytes=1 << 30, cpuset_cpus="0-1", oom_score_adj=-999),
                 rlimits=(Rlimit("nofile", 1024, 65536),), cgroups_path="/narwhal-x/c1")
    res = spec["linux"]["resources"]
    assert res["cpu"] == {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0-1"}
    assert res["memory"] == {"limit": 1 << 30, "swap": 1 << 30}
    assert res["devices"][0] == {"allow": False, "access": "rwm"}
    assert spec["process"]["oomScoreAdj"] == -100  # clamped to the daemon's own
    assert spec["process"]["rlimits"] == [{"type": "RLIMIT_NOFILE", "hard": 20000, "soft": 1024}]
    assert spec["linux"]["cgroupsPath"] == "/narwhal-x/c1"


def test_no_resources_means_inherit(host: HostInfo) -> None:
    spec = build(host)
    assert "oomScoreAdj" not in spec["process"] and "rlimits" not in spec["process"]
    assert spec["linux"]["resources"] == {"devices": [{"allow": False, "access": "rwm"}]}


def test_annotations_and_root(host: HostInfo) -> None:
    spec = build(host, annotations={"io.kubernetes.cri.container-type": "container"}, root_path="/abs/rootfs")
    assert spec["annotations"] == {"io.kubernetes.cri.container-type": "container"}
    assert spec["root"] == {"path": "/abs/rootfs", "readonly": False}
    assert spec["ociVersion"].startswith("1.0")


# ---- the pod infra container ----
PAUSE = ImageConfig(entrypoint=["/catatonit", "-P"], env=["PATH=/bin"], working_dir="/")


def test_sandbox_spec(host: HostInfo, tmp_path: Path) -> None:
    spec = build_sandbox_spec(SandboxSpecOptions(
        id="s1", image=PAUSE, hostname="pod", network=Namespace.join("/run/netns/p"), ipc=Namespace.join("/run/ipc/p"),
        uts=Namespace.join("/run/uts/p"), seccomp=RUNTIME_DEFAULT, sysctls={"net.ipv4.ip_forward": "1"},
        cgroups_path="/narwhal-x/s1", shm_path=str(tmp_path / "shm"), resolv_conf_path=str(tmp_path / "resolv"),
        annotations={"io.kubernetes.cri.container-type": "sandbox"}), host)
    assert spec["process"]["args"] == ["/catatonit", "-P"]
    assert spec["process"]["env"] == ["PATH=/bin"]
    assert spec["process"]["oomScoreAdj"] == -100  # -998 clamped
    assert spec["root"]["readonly"] is True
    assert spec["hostname"] == "pod"
    assert spec["linux"]["namespaces"][0] == {"type": "pid"}
    assert spec["linux"]["resources"]["cpu"] == {"shares": 2}
    assert spec["linux"]["sysctl"] == {"net.ipv4.ip_forward": "1"}
    assert spec["linux"]["seccomp"]["defaultAction"] == "SCMP_ACT_ERRNO"
    assert mount_at(spec, "/dev/shm") == {"destination": "/dev/shm", "type": "bind", "source": str(tmp_path / "shm"),
                                          "options": ["rbind", "ro", "nosuid", "nodev", "noexec"]}
    assert mount(spec, "/etc/resolv.conf")["options"] == ["rbind", "ro"]
    assert spec["annotations"] == {"io.kubernetes.cri.container-type": "sandbox"}


def test_sandbox_spec_host_namespaces_and_user(host: HostInfo) -> None:
    spec = build_sandbox_spec(SandboxSpecOptions(
        id="s1", image=PAUSE, hostname="node", network=Namespace.host(), uts=Namespace.host(), ipc=Namespace.host(),
        run_as_user=65535, run_as_group=65535, supplemental_groups=(10,)), host)
    assert spec["linux"]["namespaces"] == [{"type": "pid"}, {"type": "mount"}]
    assert "hostname" not in spec
    assert spec["process"]["user"] == {"uid": 65535, "gid": 65535, "additionalGids": [10, 65535]}
    assert mount(spec, "/dev/shm")["type"] == "tmpfs"


def test_sandbox_spec_needs_a_command(host: HostInfo) -> None:
    with pytest.raises(InvalidArgument, match="pause image"):
        build_sandbox_spec(SandboxSpecOptions(id="s1", image=ImageConfig()), host)


def test_missing_pod_files(host: HostInfo, tmp_path: Path) -> None:
    (tmp_path / "hosts").touch()
    files = SandboxFiles(hostname_path=str(tmp_path / "hostname"), hosts_path=str(tmp_path / "hosts"))
    spec = build(host, sandbox_files=files)
    assert mount_at(spec, "/etc/hostname") is None  # skipped when absent, as containerd
    assert not (tmp_path / "hostname").exists()  # and never created as a directory
    with pytest.raises(NotFound, match="resolv.conf"):
        build(host, sandbox_files=replace(files, resolv_conf_path=str(tmp_path / "resolv.conf")))


# ---- image volumes ----
@pytest.fixture
def volume_rootfs(tmp_path: Path) -> Path:
    rootfs = tmp_path / "rootfs"
    (rootfs / "var" / "lib" / "data" / "sub").mkdir(parents=True)
    (rootfs / "var" / "lib" / "data" / "seed.txt").write_text("seed")
    (rootfs / "var" / "lib" / "data" / "sub" / "x").write_text("x")
    (rootfs / "var" / "lib" / "data" / "link").symlink_to("/etc/shadow")
    os.chown(rootfs / "var" / "lib" / "data" / "seed.txt", 1234, 5678)
    (rootfs / "var" / "lib" / "data").chmod(0o750)
    (rootfs / "escape").symlink_to("../../")  # a volume path through this must stay inside the rootfs
    return rootfs


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_image_volumes(host: HostInfo, tmp_path: Path, volume_rootfs: Path) -> None:
    image = replace(IMAGE, volumes=["/var/lib/data", "/cache", "/mounted", "/escape/etc"])
    (tmp_path / "mine").mkdir()
    volumes = tmp_path / "volumes"
    spec = build(host, image=image, rootfs_path=volume_rootfs, volumes_dir=volumes,
                 mounts=(Mount("/mounted", str(tmp_path / "mine")),))
    data = mount_at(spec, "/var/lib/data")
    assert data is not None and data["options"] == ["rbind", "rprivate", "rw"]
    seeded = Path(data["source"])
    assert seeded.parent == volumes
    assert (seeded / "seed.txt").read_text() == "seed" and (seeded / "sub" / "x").read_text() == "x"
    assert (seeded / "seed.txt").stat().st_uid == 1234 and (seeded / "seed.txt").stat().st_gid == 5678
    assert oct(seeded.stat().st_mode & 0o777) == "0o750"
    assert os.readlink(seeded / "link") == "/etc/shadow"  # copied as a link, not followed
    cache = mount_at(spec, "/cache")
    assert cache is not None and not any(Path(cache["source"]).iterdir())
    assert mount(spec, "/mounted")["source"] == str(tmp_path / "mine")
    escape = mount_at(spec, "/escape/etc")
    assert escape is not None and not any(Path(escape["source"]).iterdir())  # the host's /etc was not copied
    # Rebuilding reuses the same directories and does not re-seed a used volume.
    (seeded / "seed.txt").write_text("changed")
    again = build(host, image=image, rootfs_path=volume_rootfs, volumes_dir=volumes,
                  mounts=(Mount("/mounted", str(tmp_path / "mine")),))
    assert mount(again, "/var/lib/data")["source"] == str(seeded)
    assert (seeded / "seed.txt").read_text() == "changed"


def test_image_volumes_off_by_default(host: HostInfo) -> None:
    spec = build(host, image=replace(IMAGE, volumes=["/data"]))
    assert mount_at(spec, "/data") is None


def test_ambient_capabilities(host: HostInfo) -> None:
    spec = build(host, drop_capabilities=("ALL", "KILL"), add_capabilities=("NET_BIND_SERVICE",),
                 add_ambient_capabilities=("NET_BIND_SERVICE", "net_admin", "KILL"))
    got = spec["process"]["capabilities"]
    assert got["ambient"] == got["inheritable"] == ["CAP_NET_BIND_SERVICE", "CAP_NET_ADMIN"]
    assert got["bounding"] == got["effective"] == got["permitted"] == ["CAP_NET_BIND_SERVICE", "CAP_NET_ADMIN"]
    with pytest.raises(InvalidArgument):
        build(host, add_ambient_capabilities=("ALL",))
    assert "ambient" not in build(host)["process"]["capabilities"]


@pytest.mark.parametrize("hostname", ["x" * 65, "two words", "a/b"])
def test_bad_hostnames(host: HostInfo, hostname: str) -> None:
    with pytest.raises(InvalidArgument, match="hostname"):
        build(host, hostname=hostname)
    with pytest.raises(InvalidArgument, match="hostname"):
        build_sandbox_spec(SandboxSpecOptions(id="s1", image=PAUSE, hostname=hostname), host)
