"""critest "Security Context" (cri-tools pkg/validate/security_context_linux.go), ported.

critest runs nginx where it needs a long-lived, recognisable server; busybox's
``httpd`` plays that part here (images from registries are out of reach).
``ipcs`` comes from test/lib/critest_tools.c (Debian's busybox-static has none).
"""
from __future__ import annotations

import re
import shutil
import socket
import subprocess
from pathlib import Path

import mkimage
import pytest
from cri_api.v1 import api_pb2
from lib import cri
from lib.critest import (  # noqa: F401
    PAUSE_CMD,
    Crit,
    crit_daemon_fixture,
    crit_fixture,
    log_contains,
    parse_log,
    push_variant,
)
from lib.registry import Registry

HTTPD = ["sh", "-c", "echo $$ > /tmp/httpd.pid && exec httpd -f -p 8080"]


def _ns(pid: int = api_pb2.CONTAINER, ipc: int = api_pb2.POD, net: int = api_pb2.POD) -> api_pb2.NamespaceOption:
    return api_pb2.NamespaceOption(pid=pid, ipc=ipc, network=net)


def _namespace_pod(crit: Crit, ns: api_pb2.NamespaceOption, log_dir: Path | None = None
                   ) -> tuple[str, api_pb2.PodSandboxConfig]:
    """createNamespacePodSandbox: an empty DNSConfig, the namespace options, optionally a log directory."""
    config = crit.pod_config("NamespaceOption-PodSandbox", log_dir=log_dir, namespaces=ns,
                             dns_config=api_pb2.DNSConfig())
    return crit.run_pod(config), config


def _namespace_container(crit: Crit, pod_id: str, pod_config: api_pb2.PodSandboxConfig, ns: api_pb2.NamespaceOption,
                         command: list[str], log_path: str = "") -> str:
    config = crit.container_config("namespace-container-", command, log_path=log_path)
    config.linux.security_context.namespace_options.CopyFrom(ns)
    cid = crit.create(pod_id, pod_config, config)
    crit.start_running(cid) if not log_path else crit.start(cid)
    return cid


def test_runtime_should_support_hostpid(crit: Crit) -> None:
    """critest: runtime should support HostPID (a server's pid is visible from another hostPID container)."""
    ns = _ns(pid=api_pb2.NODE)
    pod_id, pod_config = _namespace_pod(crit, ns)
    server = _namespace_container(crit, pod_id, pod_config, ns, HTTPD)
    pid = crit.exec_ok(server, ["sh", "-c", "while [ ! -f /tmp/httpd.pid ]; do sleep 1; done && cat /tmp/httpd.pid"])
    pid = pid.strip()
    assert pid and pid != "1"  # a host pid, not the first process of a private namespace
    other = _namespace_container(crit, pod_id, pod_config, ns, ["sh", "-c", "sleep 1000"])
    pids = crit.exec_ok(other, ["sh", "-c", "pidof httpd || true"]).split()
    assert pid in pids, f"httpd's pid {pid} should be seen by hostPID containers, got {pids}"


@pytest.mark.parametrize("mode", [api_pb2.NODE, api_pb2.POD], ids=["true", "false"])
def test_runtime_should_support_hostipc(crit: Crit, mode: int) -> None:
    """critest: runtime should support HostIpc is true / HostIpc is false."""
    crit.require_tools()
    out = subprocess.run(["ipcmk", "-M", "1048576"], check=True, capture_output=True, text=True).stdout
    segment = out.strip().removeprefix("Shared memory id: ")
    try:
        ns = _ns(pid=api_pb2.POD, ipc=mode)
        pod_id, pod_config = _namespace_pod(crit, ns)
        cid = _namespace_container(crit, pod_id, pod_config, ns, PAUSE_CMD)
        listed = crit.exec_ok(cid, ["ipcs", "-m"])
        assert (segment in listed) == (mode == api_pb2.NODE), (segment, listed)
    finally:
        subprocess.run(["ipcrm", "-m", segment], check=False, capture_output=True)


def test_runtime_should_support_podpid(crit: Crit) -> None:
    """critest: runtime should support PodPID (pid 1 is the sandbox's, not the server's)."""
    ns = api_pb2.NamespaceOption(pid=api_pb2.POD)
    pod_id, pod_config = _namespace_pod(crit, ns)
    cid = _namespace_container(crit, pod_id, pod_config, ns, HTTPD)
    crit.exec_ok(cid, ["sh", "-c", "while [ ! -f /tmp/httpd.pid ]; do sleep 1; done"])
    assert "httpd" not in crit.exec_ok(cid, ["cat", "/proc/1/cmdline"])


def test_runtime_should_support_containerpid(crit: Crit) -> None:
    """critest: runtime should support ContainerPID (pid 1 is the server itself)."""
    ns = api_pb2.NamespaceOption(pid=api_pb2.CONTAINER)
    pod_id, pod_config = _namespace_pod(crit, ns)
    cid = _namespace_container(crit, pod_id, pod_config, ns, HTTPD)
    crit.exec_ok(cid, ["sh", "-c", "while ! cat /proc/1/cmdline | grep httpd; do sleep 1; done"])


@pytest.mark.parametrize("host_network", [True, False], ids=["true", "false"])
def test_runtime_should_support_hostnetwork(crit: Crit, host_network: bool) -> None:
    """critest: runtime should support HostNetwork is true / HostNetwork is false (`netstat -ln` in the pod)."""
    with socket.socket() as srv:
        srv.bind(("", 0))
        srv.listen()
        port = srv.getsockname()[1]
        ns = _ns(pid=api_pb2.POD, ipc=api_pb2.POD, net=api_pb2.NODE if host_network else api_pb2.POD)
        pod = crit.pod_config("NamespaceOption-PodSandbox")
        log_dir = crit.tempdir("podLogTest") / pod.metadata.name
        log_dir.mkdir()
        pod_id, pod_config = _namespace_pod(crit, ns, log_dir)
        cid = _namespace_container(crit, pod_id, pod_config, ns, ["sh", "-c", "netstat -ln"], log_path="c.log")
        crit.wait_state(cid, api_pb2.CONTAINER_EXITED)
        lines = [msg for _, _, msg in parse_log(log_dir / "c.log")]
        assert lines, "netstat printed nothing"
        assert any(f":{port} " in line for line in lines) == host_network, lines


def _sc_container(crit: Crit, prefix: str, command: list[str] | None = None, log_path: str = "",
                  **security: object) -> api_pb2.ContainerConfig:
    config = crit.container_config(prefix, PAUSE_CMD if command is None else command, log_path=log_path)
    config.linux.security_context.CopyFrom(api_pb2.LinuxContainerSecurityContext(**security))  # type: ignore[arg-type]
    return config


def _running(crit: Crit, config: api_pb2.ContainerConfig, pod: tuple[str, api_pb2.PodSandboxConfig] | None = None
             ) -> str:
    pod_id, pod_config = pod or crit.pod_for_container()
    cid = crit.create(pod_id, pod_config, config)
    crit.start_running(cid)
    return cid


def test_runtime_should_support_supplementalgroups(crit: Crit) -> None:
    """critest: runtime should support SupplementalGroups."""
    cid = _running(crit, _sc_container(crit, "container-with-SupplementalGroups-test-",
                                       supplemental_groups=[1234, 5678]))
    groups = crit.exec_ok(cid, ["id", "-G"]).split()
    assert "1234" in groups and "5678" in groups


def test_runtime_should_support_runasuser(crit: Crit) -> None:
    """critest: runtime should support RunAsUser."""
    cid = _running(crit, _sc_container(crit, "container-with-RunAsUser-test-",
                                       run_as_user=api_pb2.Int64Value(value=1001)))
    assert crit.exec_ok(cid, ["id", "-u"]) == "1001\n"


def test_runtime_should_support_runasusername(crit: Crit) -> None:
    """critest: runtime should support RunAsUserName."""
    cid = _running(crit, _sc_container(crit, "container-with-RunAsUserName-test-", run_as_username="nobody"))
    assert crit.exec_ok(cid, ["id", "-nu"]) == "nobody\n"


def test_runtime_should_support_runasgroup(crit: Crit) -> None:
    """critest: runtime should support RunAsGroup."""
    pod_id, pod_config = crit.pod_with_log_dir()
    config = _sc_container(crit, "container-with-RunAsGroup-test-", ["sh", "-c", "echo $(id -u):$(id -g)"],
                           run_as_user=api_pb2.Int64Value(value=1001), run_as_group=api_pb2.Int64Value(value=1002))
    config.log_path = config.metadata.name + ".log"
    cid = crit.create(pod_id, pod_config, config)
    crit.start(cid)
    crit.wait_state(cid, api_pb2.CONTAINER_EXITED)
    assert log_contains(Path(pod_config.log_directory, config.log_path), "1001:1002\n")


def test_runtime_should_return_error_if_runasgroup_is_set_without_runasuser(crit: Crit) -> None:
    """critest: runtime should return error if RunAsGroup is set without RunAsUser."""
    pod_id, pod_config = crit.pod_for_container()
    crit.create_error(pod_id, pod_config, _sc_container(
        crit, "container-with-RunAsGroup-without-RunAsUser-test-", ["sh", "-c", "echo $(id -u):$(id -g)"],
        run_as_group=api_pb2.Int64Value(value=1002)))


@pytest.mark.parametrize("readonly", [False, True], ids=["false", "true"])
def test_runtime_should_support_readonlyrootfs(crit: Crit, readonly: bool) -> None:
    """critest: runtime should support that ReadOnlyRootfs is false / ReadOnlyRootfs is true."""
    pod_id, pod_config = crit.pod_with_log_dir()
    config = _sc_container(crit, "container-with-ReadOnlyRootfs-test-",
                           ["sh", "-c", "touch test.go && [ -f test.go ] && echo 'Found'"], readonly_rootfs=readonly)
    config.log_path = config.metadata.name + ".log"
    cid = crit.create(pod_id, pod_config, config)
    crit.start(cid)
    crit.wait_state(cid, api_pb2.CONTAINER_EXITED)
    log = Path(pod_config.log_directory, config.log_path)
    if readonly:
        assert log_contains(log, "touch: test.go: Read-only file system\n", "stderr"), parse_log(log)
    else:
        assert log_contains(log, "Found\n", "stdout"), parse_log(log)


def _can_manage_network(crit: Crit, cid: str) -> bool:
    """checkNetworkManagement: `brctl addbr foobar` needs CAP_NET_ADMIN."""
    return not crit.exec(cid, ["brctl", "addbr", "foobar"]).failed


@pytest.mark.parametrize("privileged", [True, False], ids=["true", "false"])
def test_runtime_should_support_privileged(crit: Crit, privileged: bool) -> None:
    """critest: runtime should support Privileged is true / Privileged is false."""
    config = crit.pod_config("create-Privileged-PodSandbox-for-container")
    config.linux.security_context.privileged = privileged
    pod = (crit.run_pod(config), config)
    cid = _running(crit, _sc_container(crit, "container-with-isPrivileged-test-", privileged=privileged), pod)
    assert _can_manage_network(crit, cid) == privileged


def test_runtime_should_support_adding_capability(crit: Crit) -> None:
    """critest: runtime should support adding capability."""
    pod = crit.pod_for_container()
    cid = _running(crit, _sc_container(crit, "container-with-added-capability-test-",
                                       capabilities=api_pb2.Capability(add_capabilities=["NET_ADMIN"])), pod)
    assert _can_manage_network(crit, cid)
    plain = crit.create_default(*pod, "container-with-notCapability-test-")
    crit.start_running(plain)
    assert not _can_manage_network(crit, plain)


def test_runtime_should_support_dropping_capability(crit: Crit) -> None:
    """critest: runtime should support dropping capability (ping without NET_RAW)."""
    cid = _running(crit, _sc_container(crit, "container-with-dropped-capability-test-",
                                       capabilities=api_pb2.Capability(drop_capabilities=["NET_RAW"])))
    result = crit.exec(cid, ["ping", "127.0.0.1"])
    assert result.failed and result.stdout != "" and "permission denied" in result.stderr, result


@pytest.mark.parametrize("add", [True, False], ids=["adding", "dropping"])
def test_runtime_should_support_all_capabilities(crit: Crit, add: bool) -> None:
    """critest: runtime should support adding ALL capabilities / dropping ALL capabilities."""
    caps = api_pb2.Capability(add_capabilities=["ALL"]) if add else api_pb2.Capability(drop_capabilities=["ALL"])
    cid = _running(crit, _sc_container(crit, "container-with-all-capability-test-", capabilities=caps))
    status = crit.exec_ok(cid, ["cat", "/proc/self/status"])
    assert bool(re.search(r"CapBnd:\s0000000000000000", status)) != add


def test_runtime_should_support_maskedpaths(crit: Crit, registry: Registry) -> None:
    """critest: runtime should support MaskedPaths.

    Our busybox links its applets as symlinks, and masking a symlink masks its target (runc resolves it inside
    the rootfs), which would hide /bin/busybox and sh with it; upstream's busybox uses hard links. So /bin/ls
    is a regular file in this image. Debian's busybox-static runs applets in-process when named bare
    (`sh -c ls` never execs /bin/ls), so the command names the path: `sh -c /bin/ls`.
    """
    layer = mkimage.LayerBuilder()
    layer.file("bin/ls", Path("/bin/busybox").read_bytes(), 0o755)
    image = push_variant(crit, registry, "critest/busybox-regular-ls", layer)
    config = _sc_container(crit, "container-with-maskedpaths", masked_paths=["/bin/ls"])
    config.image.image = image
    cid = _running(crit, config)
    result = crit.exec(cid, ["/bin/sh", "-c", "/bin/ls"])
    assert result.failed and result.stderr == "/bin/sh: /bin/ls: Permission denied\n", result


def test_runtime_should_support_readonlypaths(crit: Crit) -> None:
    """critest: runtime should support ReadonlyPaths."""
    cid = _running(crit, _sc_container(crit, "container-with-readonlypaths", readonly_paths=["/tmp"]))
    result = crit.exec(cid, ["touch", "/tmp/test"])
    assert result.failed and result.stderr == "touch: /tmp/test: Read-only file system\n", result


BLOCK_HOSTNAME = ('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["sethostname"], '
                  '"action": "SCMP_ACT_ERRNO"}]}')
BLOCK_CHMOD = ('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["chmod", "fchmodat"], '
               '"action": "SCMP_ACT_ERRNO"}]}')


def _profile(crit: Crit, text: str) -> str:
    path = crit.tempdir("seccomp-tests") / "profile.json"
    path.write_text(text)
    return str(path)


def _seccomp_container(crit: Crit, profile: api_pb2.SecurityProfile | None) -> str:
    """seccompTestContainer: the profile on both the sandbox and the container."""
    pod = crit.pod_config("seccomp-sandbox")
    sec = api_pb2.LinuxContainerSecurityContext()
    if profile is not None:
        pod.linux.security_context.seccomp.CopyFrom(profile)
        sec.seccomp.CopyFrom(profile)
    pod_id = crit.run_pod(pod)
    config = crit.container_config("seccomp-container-", PAUSE_CMD)
    config.linux.security_context.CopyFrom(sec)
    return _running(crit, config, (pod_id, pod))


def _seccomp_mode(crit: Crit, cid: str) -> str:
    out = crit.exec_ok(cid, ["grep", "Seccomp:", "/proc/self/status"])
    return out.split()[-1]


@pytest.mark.parametrize(("profile", "mode"), [
    (api_pb2.SecurityProfile(profile_type=api_pb2.SecurityProfile.Unconfined), "0"),
    (api_pb2.SecurityProfile(), "2"),
    (None, "0"),
], ids=["unconfined", "default", "nil"])
def test_seccomp_profiles(crit: Crit, profile: api_pb2.SecurityProfile | None, mode: str) -> None:
    """critest: should support seccomp unconfined on the container / should support seccomp default on the
    container (RuntimeDefault, the zero value) / should support nil profile, which is unconfined."""
    assert _seccomp_mode(crit, _seccomp_container(crit, profile)) == mode


def test_should_support_seccomp_localhost_profile_on_the_container(crit: Crit) -> None:
    """critest: should support seccomp localhost profile on the container."""
    profile = api_pb2.SecurityProfile(profile_type=api_pb2.SecurityProfile.Localhost,
                                      localhost_ref=_profile(crit, BLOCK_CHMOD))
    result = crit.exec(_seccomp_container(crit, profile), ["chmod", "400", "/"])
    assert result.failed and "Operation not permitted" in result.stderr, result


@pytest.mark.parametrize(("case", "settable"), [("unconfined", True), ("blocked", False),
                                                ("privileged", True)])
def test_seccomp_sethostname(crit: Crit, case: str, settable: bool) -> None:
    """critest: runtime should not block setting host name with unconfined seccomp and SYS_ADMIN
    / runtime should support an seccomp profile that blocks setting hostname with SYS_ADMIN
    / runtime should ignore a seccomp profile that blocks setting hostname when privileged."""
    if case == "unconfined":
        profile = api_pb2.SecurityProfile(profile_type=api_pb2.SecurityProfile.Unconfined)
    else:
        profile = api_pb2.SecurityProfile(profile_type=api_pb2.SecurityProfile.Localhost,
                                          localhost_ref=_profile(crit, BLOCK_HOSTNAME))
    pod = crit.pod_config("create-Privileged-PodSandbox-for-container")
    pod.linux.security_context.privileged = case == "privileged"
    pod_id = crit.run_pod(pod)
    config = crit.container_config("container-with-block-hostname-seccomp-profile-test-", ["sleep", "60"])
    config.image.user_specified_image = crit.image
    sec = config.linux.security_context
    sec.privileged = case == "privileged"
    sec.seccomp.CopyFrom(profile)
    if case != "privileged":
        sec.capabilities.add_capabilities.append("SYS_ADMIN")
    cid = _running(crit, config, (pod_id, pod))
    result = crit.exec(cid, ["hostname", "ANewHostName"])
    assert (not result.failed) == settable, result


NONEWPRIVS_SOURCE = b"""#include <stdio.h>
#include <unistd.h>
int main(void) { printf("Effective uid: %d\\n", (int)geteuid()); return 0; }
"""


@pytest.fixture
def nonewprivs_image(crit: Crit, registry: Registry, tmp_path: Path) -> str:
    """e2e-test-images/nonewprivs, rebuilt: a setuid-root binary, run as the entrypoint, that prints its
    effective uid (compiled here with gcc; skipped where there is no static C toolchain)."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is needed to build the nonewprivs test binary")
    (tmp_path / "nnp.c").write_bytes(NONEWPRIVS_SOURCE)
    built = subprocess.run([gcc, "-static", "-Os", "-o", str(tmp_path / "nnp"), str(tmp_path / "nnp.c")],
                           capture_output=True, text=True)
    if built.returncode != 0:
        pytest.skip(f"cannot build a static test binary: {built.stderr.strip()[:200]}")
    layer = mkimage.LayerBuilder()
    layer.file("usr/local/bin/nnp", (tmp_path / "nnp").read_bytes(), 0o4755)
    return push_variant(crit, registry, "critest/nonewprivs", layer, Entrypoint=["/usr/local/bin/nnp"], Cmd=None)


@pytest.mark.parametrize(("no_new_privs", "euid"), [(True, 1000), (False, 0)], ids=["true", "false"])
def test_no_new_privs(crit: Crit, nonewprivs_image: str, no_new_privs: bool, euid: int) -> None:
    """critest: NoNewPrivs should not allow privilege escalation when true / should allow privilege escalation
    when false (a setuid-root binary run as uid 1000)."""
    pod_id, pod_config = crit.pod_with_log_dir()
    config = crit.container_config("alpine-nnp-", [], image=nonewprivs_image)
    config.linux.security_context.no_new_privs = no_new_privs
    config.linux.security_context.run_as_user.value = 1000
    config.log_path = config.metadata.name + ".log"
    cid = crit.create(pod_id, pod_config, config)
    crit.start(cid)
    crit.wait_state(cid, api_pb2.CONTAINER_EXITED)
    log = Path(pod_config.log_directory, config.log_path)
    assert log_contains(log, f"Effective uid: {euid}\n"), parse_log(log)


def _status(crit: Crit) -> api_pb2.StatusResponse:
    return crit.rs.Status(api_pb2.StatusRequest(verbose=True), timeout=10)


PREDEFINED_GROUP_UID, PREDEFINED_GROUP_GID = 1000, 50000  # imagePredefinedGroupUID / imagePredefinedGroupGID


def _predefined_group_image(crit: Crit, registry: Registry) -> str:
    """test-image-predefined-group, rebuilt: default-user (uid 1000) is also in group-defined-in-image (50000)."""
    layer = mkimage.LayerBuilder()
    layer.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"
                             b"default-user:x:1000:1000::/home/default-user:/bin/sh\n")
    layer.file("etc/group", b"root:x:0:\ndefault-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n")
    return push_variant(crit, registry, "critest/test-image-predefined-group", layer, User="default-user")


@pytest.mark.parametrize("strict", [False, True], ids=["merge", "strict"])
def test_supplemental_groups_policy(crit: Crit, registry: Registry, strict: bool) -> None:
    """critest: SupplementalGroupsPolicy=Merge (Default): if the container's primary UID belongs to some groups in
    the image, runtime should add SupplementalGroups to them / SupplementalGroupsPolicy=Strict: even if ..., runtime
    should not add SupplementalGroups to them. (critest runs these only when Status advertises the feature.)"""
    assert _status(crit).features.supplemental_groups_policy, "The runtime does not support SupplementalGroupsPolicy"
    image = _predefined_group_image(crit, registry)
    pod_id, pod_config = crit.pod_with_log_dir()
    config = _sc_container(crit, "container-with-SupplementalGroupsPolicy-", ["sh", "-c", "id -G; sleep infinity"],
                           run_as_user=api_pb2.Int64Value(value=PREDEFINED_GROUP_UID), supplemental_groups=[1234],
                           supplemental_groups_policy=api_pb2.SupplementalGroupsPolicy.Strict if strict
                           else api_pb2.SupplementalGroupsPolicy.Merge)
    config.image.image = image
    config.log_path = config.metadata.name + ".log"
    cid = crit.create(pod_id, pod_config, config)
    crit.start(cid)
    groups = [PREDEFINED_GROUP_UID, 1234] + ([] if strict else [PREDEFINED_GROUP_GID])
    log = Path(pod_config.log_directory, config.log_path)
    cri.wait_for(lambda: log.exists() and parse_log(log) != [], what="container output")
    status = crit.status(cid).status
    assert status.state == api_pb2.CONTAINER_RUNNING
    user = status.user.linux
    assert (user.uid, user.gid, sorted(user.supplemental_groups)) == (PREDEFINED_GROUP_UID, PREDEFINED_GROUP_UID,
                                                                      groups)
    expected = " ".join(map(str, groups)) + "\n"
    assert log_contains(log, expected), parse_log(log)
    assert crit.exec_ok(cid, ["id", "-G"]) == expected


def test_user_namespaces(crit: Crit) -> None:
    """critest: UserNamespaces specs (NamespaceMode_POD/NODE, bad mappings, CONTAINER/TARGET modes); critest skips
    them unless the default runtime handler advertises features.user_namespaces."""
    handlers = _status(crit).runtime_handlers
    if not any(h.name == "" and h.features.user_namespaces for h in handlers):
        pytest.skip("no runtime handler found which supports user namespaces")
    pytest.fail("narwhald now advertises user namespaces: port the UserNamespaces specs")

