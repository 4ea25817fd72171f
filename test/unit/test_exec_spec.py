"""The exec process spec is the container's own process with new args, as containerd's CRI builds it."""
from __future__ import annotations

import pytest

from pkg import errors
from pkg.runtime.exec import process_spec

CONTAINER = {
    "process": {
        "args": ["sleep", "inf"], "env": ["PATH=/bin", "TERM=dumb"], "cwd": "/work", "terminal": False,
        "user": {"uid": 1000, "gid": 1000, "additionalGids": [5]}, "consoleSize": {"height": 1, "width": 1},
        "capabilities": {"bounding": ["CAP_KILL"]}, "apparmorProfile": "p", "noNewPrivileges": True,
    },
    "root": {"path": "rootfs"},
}


def test_exec_keeps_identity_and_environment_but_runs_the_new_command() -> None:
    spec = process_spec(CONTAINER, ["ls", "-l"], tty=False)
    assert spec["args"] == ["ls", "-l"] and spec["terminal"] is False
    for key in ("env", "cwd", "user", "capabilities", "apparmorProfile", "noNewPrivileges"):
        assert spec[key] == CONTAINER["process"][key]  # type: ignore[index]
    assert "consoleSize" not in spec
    assert CONTAINER["process"]["args"] == ["sleep", "inf"]  # type: ignore[index]  # not mutated


def test_tty_exec_gets_term_xterm() -> None:
    spec = process_spec(CONTAINER, ["sh"], tty=True)
    assert spec["terminal"] is True
    assert spec["env"] == ["PATH=/bin", "TERM=xterm"]


def test_container_without_a_process_is_refused() -> None:
    with pytest.raises(errors.FailedPrecondition):
        process_spec({"root": {}}, ["ls"], tty=False)
