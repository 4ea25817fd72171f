"""Bounded resources (issue 15): ExecSync's two streams share one budget below gRPC's 16 MiB, and sockets never
exist with a mode wider than 0660, whatever the umask."""
from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

from pkg import sockets
from pkg.runtime.exec_sync import MAX_SYNC_TOTAL, _Budget, _Capture


async def test_exec_sync_streams_share_one_budget() -> None:
    budget = _Budget(1000)
    out, err = _Capture(800, budget), _Capture(800, budget)
    await out.write(b"o" * 700)
    await err.write(b"e" * 700)
    await out.write(b"o" * 700)
    assert len(out.data) == 700 and len(err.data) == 300 and budget.left == 0
    assert MAX_SYNC_TOTAL < 16 << 20


def test_sockets_are_born_0660_under_any_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        sock = sockets.bind_unix(tmp_path / "api.sock")
        assert stat.S_IMODE(os.stat(tmp_path / "api.sock").st_mode) == 0o660
        sock.close()
        with sockets.staged(tmp_path / "cri.sock") as private:
            assert stat.S_IMODE(os.stat(private.parent).st_mode) == 0o700
            s = socket.socket(socket.AF_UNIX)
            s.bind(str(private))
        assert stat.S_IMODE(os.stat(tmp_path / "cri.sock").st_mode) == 0o660
        assert sorted(p.name for p in tmp_path.iterdir()) == ["api.sock", "cri.sock"]
        s.close()
    finally:
        os.umask(old)


def test_default_seccomp_profile_has_no_io_uring() -> None:
    from pkg.runtime.seccomp import default_profile

    profile = default_profile(["CAP_SYS_ADMIN"], "amd64", (6, 1))
    allowed = {name for rule in profile["syscalls"] for name in rule["names"] if rule["action"] == "SCMP_ACT_ALLOW"}
    assert "read" in allowed and not allowed & {"io_uring_setup", "io_uring_enter", "io_uring_register"}


def test_apparmor_where_enabled_and_where_not() -> None:
    import pytest

    from pkg.errors import InvalidArgument
    from pkg.runtime import apparmor
    from pkg.runtime.seccomp import UNCONFINED, ProfileType, SecurityProfile, apparmor_profile

    custom = SecurityProfile(ProfileType.LOCALHOST, "my-profile")
    # Off (this kernel): nothing applied, an explicit profile refused.
    assert apparmor_profile(None, privileged=False, enabled=False) == ""
    assert apparmor_profile(UNCONFINED, privileged=False, enabled=False) == ""
    with pytest.raises(InvalidArgument, match="AppArmor is not enabled"):
        apparmor_profile(custom, privileged=False, enabled=False)
    # On: the default profile unless unconfined or privileged.
    loads: list[str] = []

    def load() -> str:
        loads.append(apparmor.DEFAULT_PROFILE)
        return apparmor.DEFAULT_PROFILE

    assert apparmor_profile(None, privileged=False, enabled=True, load_default=load) == "narwhal-default"
    assert apparmor_profile(UNCONFINED, privileged=False, enabled=True, load_default=load) == ""
    assert apparmor_profile(None, privileged=True, enabled=True, load_default=load) == ""
    assert apparmor_profile(custom, privileged=False, enabled=True, load_default=load) == "my-profile"
    assert loads == ["narwhal-default"]
    text = apparmor.profile_text()
    assert text.count("{") == text.count("}") and "profile narwhal-default" in text and "deny mount," in text


def test_docker_security_opt_apparmor_is_carried() -> None:
    from pkg.docker.engine.model import HostConfig
    from pkg.docker.engine.translate import apparmor_option
    from pkg.runtime.seccomp import UNCONFINED, ProfileType, SecurityProfile

    assert apparmor_option(HostConfig()) is None
    assert apparmor_option(HostConfig(security_opt=("apparmor=unconfined",))) == UNCONFINED
    assert apparmor_option(HostConfig(security_opt=("apparmor:x",))) == SecurityProfile(ProfileType.LOCALHOST, "x")


def test_apparmor_profile_parses(tmp_path: Path) -> None:
    """apparmor_parser (Debian's apparmor package, optional here) accepts narwhal-default without loading it."""
    import shutil
    import subprocess

    import pytest

    from pkg.runtime import apparmor

    parser = shutil.which("apparmor_parser")
    if parser is None:
        pytest.skip("apparmor_parser is not installed")
    profile = tmp_path / "narwhal-default"
    profile.write_text(apparmor.profile_text())
    proc = subprocess.run([parser, "--skip-kernel-load", "--skip-cache", "--skip-read-cache", str(profile)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
