"""Seccomp profile selection and the resolution of Docker-schema conditions."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pkg.errors import InvalidArgument, NotFound
from pkg.runtime import caps
from pkg.runtime.seccomp import (
    RUNTIME_DEFAULT,
    UNCONFINED,
    ProfileType,
    SecurityProfile,
    default_profile,
    kernel_version,
    load_localhost,
    profile_from_path,
    seccomp_spec,
)


def allowed(profile: dict[str, Any]) -> set[str]:
    """Syscalls allowed without argument conditions."""
    return {n for r in profile["syscalls"] if r["action"] == "SCMP_ACT_ALLOW" and not r.get("args") for n in r["names"]}


def rules_for(profile: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [r for r in profile["syscalls"] if name in r["names"]]


def test_default_profile_shape_amd64() -> None:
    p = default_profile(caps.DEFAULT_CAPS, "amd64", (6, 1))
    assert p["defaultAction"] == "SCMP_ACT_ERRNO" and p["defaultErrnoRet"] == 1
    assert p["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    names = allowed(p)
    for common in ("read", "write", "execve", "clone3" if False else "futex", "arch_prctl", "chroot", "ptrace"):
        assert common in names
    for blocked in ("mount", "unshare", "setns", "keyctl", "add_key", "bpf", "reboot", "kexec_load", "init_module",
                    "open_by_handle_at", "arm_fadvise64_64", "socket"):
        assert blocked not in names


def test_default_profile_conditions_on_caps() -> None:
    base = default_profile(caps.DEFAULT_CAPS, "amd64", (6, 1))
    admin = default_profile([*caps.DEFAULT_CAPS, "CAP_SYS_ADMIN"], "amd64", (6, 1))
    assert {"mount", "unshare", "setns", "clone", "clone3"} <= allowed(admin)
    # Without CAP_SYS_ADMIN clone is allowed only without namespace flags, and clone3 answers ENOSYS.
    (clone,) = rules_for(base, "clone")
    assert clone["args"] == [{"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]
    (clone3,) = rules_for(base, "clone3")
    assert clone3["action"] == "SCMP_ACT_ERRNO" and clone3["errnoRet"] == 38
    assert not [r for r in rules_for(admin, "clone3") if r["action"] == "SCMP_ACT_ERRNO"]
    assert "chroot" not in allowed(default_profile([], "amd64", (6, 1)))
    assert {"bpf", "perf_event_open"} <= allowed(default_profile(["CAP_BPF", "CAP_PERFMON"], "amd64", (6, 1)))


def test_default_profile_socket_excludes_vsock() -> None:
    (socket,) = rules_for(default_profile([], "amd64", (6, 1)), "socket")
    assert socket["args"] == [{"index": 0, "value": 40, "valueTwo": 0, "op": "SCMP_CMP_NE"}]


def test_default_profile_arch_and_kernel() -> None:
    arm = default_profile([], "arm64", (6, 1))
    assert arm["architectures"] == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    assert "arm_fadvise64_64" in allowed(arm) and "arch_prctl" not in allowed(arm)
    assert "ptrace" not in allowed(default_profile([], "amd64", (4, 4)))
    assert "ptrace" in allowed(default_profile([], "amd64", (4, 8)))


@pytest.mark.parametrize(("value", "expected"), [
    ("", None),
    ("unconfined", UNCONFINED),
    ("runtime/default", RUNTIME_DEFAULT),
    ("docker/default", RUNTIME_DEFAULT),
    ("localhost//etc/p.json", SecurityProfile(ProfileType.LOCALHOST, "/etc/p.json")),
])
def test_profile_from_path(value: str, expected: SecurityProfile | None) -> None:
    assert profile_from_path(value) == expected


def test_profile_from_bad_path() -> None:
    with pytest.raises(InvalidArgument):
        profile_from_path("something/else")


def test_selection() -> None:
    assert seccomp_spec(None, privileged=False, caps=[]) is None
    assert seccomp_spec(UNCONFINED, privileged=False, caps=[]) is None
    assert seccomp_spec(RUNTIME_DEFAULT, privileged=True, caps=[]) is None
    assert seccomp_spec(RUNTIME_DEFAULT, privileged=False, caps=[], arch="amd64", kernel=(6, 1)) is not None


def test_localhost_oci_profile(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    doc = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"], "comment": "x",
           "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}
    path.write_text(json.dumps(doc))
    got = load_localhost(str(path), [])
    assert got == {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
                   "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}


def test_localhost_docker_profile_is_resolved(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps({
        "defaultAction": "SCMP_ACT_ERRNO",
        "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]}],
        "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"},
                     {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}}],
    }))
    got = load_localhost(str(path), [], arch="amd64", kernel=(6, 1))
    assert got["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"]
    assert got["syscalls"] == [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]


@pytest.mark.parametrize(("content", "error"), [
    ("not json", InvalidArgument),
    ("[]", InvalidArgument),
    ('{"syscalls": []}', InvalidArgument),
    ('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"action": "SCMP_ACT_ALLOW"}]}', InvalidArgument),
])
def test_localhost_bad_profiles(tmp_path: Path, content: str, error: type[Exception]) -> None:
    path = tmp_path / "p.json"
    path.write_text(content)
    with pytest.raises(error):
        load_localhost(str(path), [])


def test_localhost_paths(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        load_localhost(str(tmp_path / "missing.json"), [])
    with pytest.raises(InvalidArgument, match="absolute"):
        load_localhost("relative.json", [])
    with pytest.raises(InvalidArgument, match="empty"):
        load_localhost("", [])
    with pytest.raises(InvalidArgument):
        load_localhost(str(tmp_path), [])  # a directory


def test_kernel_version() -> None:
    assert kernel_version("6.18.44-fc-v595") == (6, 18)
    assert kernel_version("5.10.0-21-amd64") == (5, 10)
    assert kernel_version("weird") == (0, 0)
