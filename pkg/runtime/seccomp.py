"""Seccomp profiles for containers: RuntimeDefault (Docker's allowlist), Unconfined, Localhost files.

The default profile ships as data (``seccomp_default.json``, Docker's schema):
rules carry conditions on the container's capabilities, the host architecture
and the kernel version, resolved here into a plain OCI ``linux.seccomp`` — as
containerd's ``seccomp.DefaultProfile`` and moby's ``setupSeccomp`` do.
Localhost profiles may be in either form; Docker-schema ones are resolved the
same way.
"""
from __future__ import annotations

import functools
import json
import os
import platform
from collections.abc import Callable, Iterable, Mapping
from importlib import resources
from typing import Any

from pkg.errors import InvalidArgument, NotFound
from pkg.model.spec import ProfileType as ProfileType  # re-exported: defined with the models
from pkg.model.spec import SecurityProfile as SecurityProfile
from pkg.runtime import apparmor

# Go (and Docker profile) architecture names of the machines Python reports.
_GOARCH = {
    "x86_64": "amd64", "amd64": "amd64", "i386": "386", "i686": "386", "aarch64": "arm64", "arm64": "arm64",
    "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64", "mips64": "mips64",
}
# Native seccomp architecture per Go architecture.
_SCMP_NATIVE = {
    "amd64": "SCMP_ARCH_X86_64", "386": "SCMP_ARCH_X86", "arm64": "SCMP_ARCH_AARCH64", "arm": "SCMP_ARCH_ARM",
    "ppc64le": "SCMP_ARCH_PPC64LE", "s390x": "SCMP_ARCH_S390X", "riscv64": "SCMP_ARCH_RISCV64",
    "mips64": "SCMP_ARCH_MIPS64",
}
_MAX_PROFILE_BYTES = 4 << 20


RUNTIME_DEFAULT = SecurityProfile(ProfileType.RUNTIME_DEFAULT)
UNCONFINED = SecurityProfile(ProfileType.UNCONFINED)


def profile_from_path(value: str) -> SecurityProfile | None:
    """The deprecated ``seccomp_profile_path`` string form; "" means not set (unconfined, as in CRI)."""
    if value == "":
        return None
    if value == "unconfined":
        return UNCONFINED
    if value in ("runtime/default", "docker/default"):
        return RUNTIME_DEFAULT
    if value.startswith("localhost/"):
        return SecurityProfile(ProfileType.LOCALHOST, value.removeprefix("localhost/"))
    raise InvalidArgument(f"unsupported seccomp profile {value!r}")


def host_arch() -> str:
    machine = platform.machine()
    return _GOARCH.get(machine, machine)


def kernel_version(release: str | None = None) -> tuple[int, int]:
    release = release if release is not None else os.uname().release
    parts = release.split(".")
    try:
        return int(parts[0]), int("".join(ch for ch in parts[1] if ch.isdigit()) or 0)
    except (IndexError, ValueError):
        return (0, 0)


@functools.cache
def _default_document() -> dict[str, Any]:
    text = resources.files(__package__).joinpath("seccomp_default.json").read_text()
    doc: dict[str, Any] = json.loads(text)
    return doc


def _parse_kernel(value: str) -> tuple[int, int]:
    major, _, minor = value.partition(".")
    return int(major), int(minor or 0)


def _applies(rule: Mapping[str, Any], caps: frozenset[str], arch: str, kernel: tuple[int, int]) -> bool:
    inc: Mapping[str, Any] = rule.get("includes") or {}
    exc: Mapping[str, Any] = rule.get("excludes") or {}
    if arch in (exc.get("arches") or ()):
        return False
    if any(c in caps for c in exc.get("caps") or ()):
        return False
    if exc.get("minKernel") and kernel >= _parse_kernel(exc["minKernel"]):
        return False
    if inc.get("arches") and arch not in inc["arches"]:
        return False
    if not all(c in caps for c in inc.get("caps") or ()):
        return False
    return not (inc.get("minKernel") and kernel < _parse_kernel(inc["minKernel"]))


def _oci_rule(rule: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"names": list(rule["names"]), "action": rule["action"]}
    if rule.get("args"):
        out["args"] = [
            {"index": a["index"], "value": a["value"], "valueTwo": a.get("valueTwo", 0), "op": a["op"]}
            for a in rule["args"]
        ]
    if rule.get("errnoRet") is not None:
        out["errnoRet"] = rule["errnoRet"]
    return out


def resolve_docker_profile(
    doc: Mapping[str, Any], caps: Iterable[str], arch: str | None = None, kernel: tuple[int, int] | None = None
) -> dict[str, Any]:
    """A Docker-schema profile (archMap, includes/excludes) → OCI ``linux.seccomp`` for these caps/arch/kernel."""
    arch = arch or host_arch()
    kernel = kernel or kernel_version()
    capset = frozenset(caps)
    out: dict[str, Any] = {"defaultAction": doc["defaultAction"]}
    if doc.get("defaultErrnoRet") is not None:
        out["defaultErrnoRet"] = doc["defaultErrnoRet"]
    arch_map = doc.get("archMap") or {}
    if isinstance(arch_map, list):  # Docker's own list form
        arch_map = {m["architecture"]: m.get("subArchitectures") or [] for m in arch_map}
    native = _SCMP_NATIVE.get(arch)
    if native in arch_map:
        out["architectures"] = [native, *arch_map[native]]
    elif doc.get("architectures"):
        out["architectures"] = list(doc["architectures"])
    out["syscalls"] = [_oci_rule(r) for r in doc.get("syscalls") or () if _applies(r, capset, arch, kernel)]
    return out


def default_profile(
    caps: Iterable[str], arch: str | None = None, kernel: tuple[int, int] | None = None
) -> dict[str, Any]:
    """The RuntimeDefault profile for a container with these (bounding) capabilities."""
    return resolve_docker_profile(_default_document(), caps, arch, kernel)


def load_localhost(path: str, caps: Iterable[str], arch: str | None = None,
                   kernel: tuple[int, int] | None = None) -> dict[str, Any]:
    """Read a node-local profile; NotFound if missing, InvalidArgument if not an absolute path or not a profile."""
    if not path:
        raise InvalidArgument("localhost seccomp profile reference must not be empty")
    if not os.path.isabs(path):
        raise InvalidArgument(f"localhost seccomp profile path {path!r} must be absolute")
    try:
        with open(path, "rb") as f:
            raw = f.read(_MAX_PROFILE_BYTES + 1)
    except FileNotFoundError:
        raise NotFound(f"seccomp profile {path!r} not found") from None
    except (IsADirectoryError, PermissionError, OSError) as err:
        raise InvalidArgument(f"cannot read seccomp profile {path!r}: {err.strerror or err}") from None
    if len(raw) > _MAX_PROFILE_BYTES:
        raise InvalidArgument(f"seccomp profile {path!r} is larger than {_MAX_PROFILE_BYTES} bytes")
    try:
        doc = json.loads(raw)
    except ValueError as err:
        raise InvalidArgument(f"seccomp profile {path!r} is not valid JSON: {err}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("defaultAction"), str):
        raise InvalidArgument(f"seccomp profile {path!r} has no defaultAction")
    for rule in doc.get("syscalls") or ():
        if not isinstance(rule, dict) or not isinstance(rule.get("action"), str) or not (
            isinstance(rule.get("names"), list) or isinstance(rule.get("name"), str)
        ):
            raise InvalidArgument(f"seccomp profile {path!r} has a malformed syscall rule: {rule!r}")
        if "name" in rule and "names" not in rule:  # the old single-name form
            rule["names"] = [rule.pop("name")]
    if "archMap" in doc or any("includes" in r or "excludes" in r for r in doc.get("syscalls") or ()):
        return resolve_docker_profile(doc, caps, arch, kernel)
    return {k: v for k, v in doc.items() if k in ("defaultAction", "defaultErrnoRet", "architectures", "flags",
                                                  "listenerPath", "listenerMetadata", "syscalls")}


def seccomp_spec(profile: SecurityProfile | None, *, privileged: bool, caps: Iterable[str],
                 arch: str | None = None, kernel: tuple[int, int] | None = None) -> dict[str, Any] | None:
    """``linux.seccomp`` for a container, or None for no filter (privileged, unset or Unconfined)."""
    if privileged or profile is None or profile.type is ProfileType.UNCONFINED:
        return None
    if profile.type is ProfileType.RUNTIME_DEFAULT:
        return default_profile(caps, arch, kernel)
    return load_localhost(profile.localhost_ref, caps, arch, kernel)


def apparmor_profile(profile: SecurityProfile | None, *, privileged: bool, enabled: bool | None = None,
                     load_default: Callable[[], str] | None = None) -> str:
    """``process.apparmorProfile``.

    Where AppArmor is on (containerd's rules): privileged or Unconfined run unconfined, a Localhost profile
    by name, and RuntimeDefault or nothing at all ``narwhal-default`` (loaded on first use).  Where it is
    off, nothing is applied, and an explicit Localhost profile fails loudly (containerd: "apparmor is not
    supported") instead of being ignored.
    """
    if enabled is None:
        enabled = apparmor.enabled()
    if privileged:
        return ""
    if profile is not None and profile.type is ProfileType.LOCALHOST:
        name = profile.localhost_ref.removeprefix("localhost/")
        if not name:
            raise InvalidArgument("localhost AppArmor profile name must not be empty")
        if not enabled:
            raise InvalidArgument(f"apparmor is not supported: AppArmor profile {name!r} requested, "
                                  "but AppArmor is not enabled on this host")
        return name
    if not enabled or (profile is not None and profile.type is ProfileType.UNCONFINED):
        return ""
    return (load_default or apparmor.ensure_default)()
