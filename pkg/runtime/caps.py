"""Linux capabilities: names, the container default set, and add/drop as containerd's CRI applies them.

CRI names capabilities without the ``CAP_`` prefix (``NET_ADMIN``) and uses
``ALL`` in add or drop; OCI specs want ``CAP_NET_ADMIN``.  A container can
never get a capability narwhald itself lacks (root here has no
CAP_SYS_RESOURCE), so requested sets are clamped to the daemon's own.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from pkg.errors import InvalidArgument

log = logging.getLogger(__name__)

# Index = capability number (linux/capability.h).
ALL_CAPS: tuple[str, ...] = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT",
    "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
    "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)

# containerd's default set for unprivileged containers.
DEFAULT_CAPS: tuple[str, ...] = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL",
    "CAP_AUDIT_WRITE",
)


def normalize(name: str) -> str:
    """``net_admin``/``NET_ADMIN``/``CAP_NET_ADMIN`` → ``CAP_NET_ADMIN``; unknown names are InvalidArgument."""
    upper = name.strip().upper()
    cap = upper if upper.startswith("CAP_") else "CAP_" + upper
    if cap not in ALL_CAPS:
        raise InvalidArgument(f"unknown capability {name!r}")
    return cap


def caps_from_mask(mask: int) -> frozenset[str]:
    return frozenset(cap for bit, cap in enumerate(ALL_CAPS) if mask >> bit & 1)


def current_effective_caps(status: Path = Path("/proc/self/status")) -> frozenset[str]:
    """The daemon's own effective set: the most any container can be given (containerd's ``cap.Current``)."""
    for line in status.read_text().splitlines():
        if line.startswith("CapEff:"):
            return caps_from_mask(int(line.split(":", 1)[1].strip(), 16))
    return frozenset(ALL_CAPS)


def _is_all(name: str) -> bool:
    return name.strip().upper() == "ALL"


def ambient_caps(ambient: Iterable[str] = (), drop: Iterable[str] = (), *,
                 available: frozenset[str] = frozenset(ALL_CAPS)) -> list[str]:
    """CRI ``add_ambient_capabilities`` minus the named drops: what survives exec for a non-root user."""
    named_drop = {normalize(c) for c in drop if not _is_all(c)}
    wanted = {normalize(c) for c in ambient if not _is_all(c)}
    if any(_is_all(c) for c in ambient):
        raise InvalidArgument("ALL is not allowed in ambient capabilities; name them")
    return [c for c in ALL_CAPS if c in wanted - named_drop and c in available]


def container_caps(
    add: Iterable[str] = (),
    drop: Iterable[str] = (),
    *,
    privileged: bool = False,
    available: frozenset[str] = frozenset(ALL_CAPS),
) -> list[str]:
    """The capability set of a container process, in ALL_CAPS order.

    As containerd's CRI: ``ALL`` in add starts from every capability, ``ALL`` in
    drop from none, then the named adds and drops apply (drop wins), so
    ``add=[ALL], drop=[CHOWN]`` is everything but CAP_CHOWN.  Privileged means
    every capability narwhald has.  The result never exceeds ``available``.
    """
    add, drop = list(add), list(drop)
    named_add = {normalize(c) for c in add if not _is_all(c)}
    named_drop = {normalize(c) for c in drop if not _is_all(c)}
    if privileged:
        return [c for c in ALL_CAPS if c in available]
    caps = set(DEFAULT_CAPS)
    if any(_is_all(c) for c in add):
        caps = set(ALL_CAPS)
    if any(_is_all(c) for c in drop):
        caps = set()
    caps = (caps | named_add) - named_drop
    missing = (caps & named_add) - available
    if missing:
        log.warning("capabilities %s requested but narwhald lacks them; not granted", ", ".join(sorted(missing)))
    return [c for c in ALL_CAPS if c in caps and c in available]
