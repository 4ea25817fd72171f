"""The containers' process specs every exec starts from: read from containerd once, each caller gets its own copy."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, cast

import pytest

from pkg import errors
from pkg.containerd.client import Client
from pkg.runtime import exec as exec_mod
from pkg.runtime import process_specs
from pkg.runtime.process_specs import ProcessSpecs

CLIENT = cast(Client, object())
PROCESS = {"args": ["sleep", "inf"], "env": ["PATH=/bin", "TERM=dumb"], "cwd": "/", "user": {"uid": 0, "gid": 0}}


@pytest.fixture
def fetched(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Containers whose spec was read from the (fake) containerd, in order; c2's has no process."""
    seen: list[str] = []

    async def spec_bytes(client: Client, id_: str, *, what: str) -> bytes:
        seen.append(id_)
        if id_ == "missing":
            raise errors.NotFound(f"{what}: not found")
        return json.dumps({"ociVersion": "1.0.2", **({"process": PROCESS} if id_ != "c2" else {})}).encode()

    monkeypatch.setattr(process_specs.ctr_containers, "spec_bytes", spec_bytes)
    return seen


async def test_read_once_then_copies(fetched: list[str]) -> None:
    specs = ProcessSpecs()
    first = await specs.get(CLIENT, "c1")
    first["env"].append("MINE=1")  # a caller's edit must not reach the next exec
    assert await specs.get(CLIENT, "c1") == PROCESS and fetched == ["c1"]
    specs.forget("c1")
    assert await specs.get(CLIENT, "c1") == PROCESS and fetched == ["c1", "c1"]


async def test_put_at_create_needs_no_read(fetched: list[str]) -> None:
    specs = ProcessSpecs()
    specs.put("c3", {"ociVersion": "1.0.2", "process": PROCESS})
    assert await specs.get(CLIENT, "c3") == PROCESS and fetched == []


async def test_errors_are_not_kept(fetched: list[str]) -> None:
    specs = ProcessSpecs()
    with pytest.raises(errors.FailedPrecondition, match="no process"):
        await specs.get(CLIENT, "c2")
    with pytest.raises(errors.NotFound):
        await specs.get(CLIENT, "missing")
    with pytest.raises(errors.NotFound):
        await specs.get(CLIENT, "missing")
    assert fetched == ["c2", "missing", "missing"]


async def test_exec_process_spec_from_the_kept_one(fetched: list[str]) -> None:
    """An exec's spec is the kept process with its own args (and TERM for a TTY), as before."""
    specs = ProcessSpecs()
    proc = exec_mod.ExecProcess(CLIENT, "c1", ["ls", "-l"], fifo_root=Path("/nonexistent"), tty=True,
                                specs=specs)
    spec: dict[str, Any] = await proc._spec()
    assert spec["args"] == ["ls", "-l"] and spec["terminal"] is True
    assert spec["env"] == ["PATH=/bin", "TERM=xterm"] and spec["cwd"] == "/"
    assert await specs.get(CLIENT, "c1") == PROCESS and fetched == ["c1"]


def test_exec_fifos_survive_a_finished_execs_cleanup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A finished exec's deletion (after its client was answered) removes the container's exec dir once empty;
    the next exec, making its own dir in it at that moment, tries again (it got exit 126 under load)."""
    proc = exec_mod.ExecProcess(CLIENT, "c1", ["true"], fifo_root=tmp_path)
    real_mkdir = os.mkdir
    removed: list[str] = []
    (tmp_path / "c1").mkdir()  # an earlier exec's

    def mkdir(path: Any, mode: int = 0o777) -> None:
        if Path(path) == proc._dir.parent and not removed:  # it exists (EEXIST), and is gone right after
            os.rmdir(path)
            removed.append("parent")
            raise FileExistsError(17, "File exists")
        if Path(path) == proc._dir and len(removed) < 2:  # the other exec's cleanup wins the race again
            os.rmdir(proc._dir.parent)
            removed.append("parent")
        real_mkdir(path, mode)

    monkeypatch.setattr(exec_mod.os, "mkdir", mkdir)
    proc._make_fifos()
    assert removed == ["parent", "parent"] and sorted(p.name for p in proc._dir.iterdir()) == ["stderr", "stdout"]
    assert sorted(proc._fds) == ["stderr", "stdout"] and len(proc._keepers) == 2  # opened, for the shim's Start
    for fd in [*proc._fds.values(), *proc._keepers]:
        os.close(fd)
