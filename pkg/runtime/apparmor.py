"""AppArmor where the host has it: a docker-default-style profile of Narwhal's own, loaded on first use.

Where AppArmor is enabled, a container that asks for nothing (or RuntimeDefault) runs confined by
``narwhal-default``: the broad file/network/capability access a container already has, minus writes to
/proc and /sys knobs that reach the host, mounts, and ptrace of processes outside its profile -- the
shape of moby's docker-default.  Where it is not enabled, nothing is applied, and an explicit profile is
refused rather than silently ignored (see ``seccomp.apparmor_profile``).
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from pkg.errors import Internal

DEFAULT_PROFILE = "narwhal-default"
APPARMOR_FS = Path("/sys/kernel/security/apparmor")


def enabled() -> bool:
    return APPARMOR_FS.exists()


def profile_text(name: str = DEFAULT_PROFILE) -> str:
    """The profile, in apparmor_parser's language."""
    return f"""#include <tunables/global>

profile {name} flags=(attach_disconnected,mediate_deleted) {{
  #include <abstractions/base>

  network,
  capability,
  file,
  umount,
  signal (receive) peer=unconfined,
  signal (send,receive) peer={name},

  deny @{{PROC}}/* w,   # deny write for all files directly in /proc (not in a subdir)
  deny @{{PROC}}/{{[^1-9],[^1-9][^0-9],[^1-9s][^0-9y][^0-9s],[^1-9][^0-9][^0-9][^0-9/]*}}/** w,
  deny @{{PROC}}/sys/[^k]** w,
  deny @{{PROC}}/sys/kernel/{{?,??,[^s][^h][^m]**}} w,
  deny @{{PROC}}/sysrq-trigger rwklx,
  deny @{{PROC}}/kcore rwklx,

  deny mount,

  deny /sys/[^f]*/** wklx,
  deny /sys/f[^s]*/** wklx,
  deny /sys/fs/[^c]*/** wklx,
  deny /sys/fs/c[^g]*/** wklx,
  deny /sys/fs/cg[^r]*/** wklx,
  deny /sys/firmware/** rwklx,
  deny /sys/devices/virtual/powercap/** rwklx,
  deny /sys/kernel/security/** rwklx,

  ptrace (trace,read,tracedby,readby) peer={name},
}}
"""


def loaded(name: str = DEFAULT_PROFILE) -> bool:
    try:
        listing = (APPARMOR_FS / "profiles").read_text()
    except OSError:
        return False
    return any(line.split(" (")[0] == name for line in listing.splitlines())


def ensure_default(parser: str | None = None) -> str:
    """Load ``narwhal-default`` unless the kernel already has it (something may have unloaded it: check each
    time, as moby does); returns its name.  Blocking: call from a thread."""
    if loaded():
        return DEFAULT_PROFILE
    binary = parser or shutil.which("apparmor_parser")
    if binary is None:
        raise Internal(f"AppArmor enabled on system but the {DEFAULT_PROFILE} profile could not be loaded: "
                       "apparmor_parser not found")
    with tempfile.NamedTemporaryFile("w", prefix=f"{DEFAULT_PROFILE}.", suffix=".apparmor") as f:
        f.write(profile_text())
        f.flush()
        proc = subprocess.run([binary, "-Kr", f.name], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise Internal(f"AppArmor enabled on system but the {DEFAULT_PROFILE} profile could not be loaded: "
                       f"{proc.stderr.strip() or proc.stdout.strip()}")
    return DEFAULT_PROFILE
