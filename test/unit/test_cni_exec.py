"""The plugin executor and the chain runner against small script plugins (no root needed)."""
from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from pkg import errors
from pkg.cni import exec as cni_exec
from pkg.cni.chain import Runner
from pkg.cni.config import NetworkConfigList


def plugin(bin_dir: Path, name: str, body: str) -> Path:
    """A Python plugin that records its env and stdin, then runs ``body``."""
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / name
    path.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys, time\n"
        "conf = json.load(sys.stdin)\n"
        "env = {k: v for k, v in os.environ.items() if k.startswith('CNI_')}\n"
        f"open({str(bin_dir / (name + '.calls'))!r}, 'a').write(json.dumps({{'env': env, 'conf': conf}}) + '\\n')\n"
        + body + "\n"
    )
    path.chmod(0o755)
    return path


def calls(bin_dir: Path, name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (bin_dir / f"{name}.calls").read_text().splitlines()]


REPO = str(Path(__file__).resolve().parents[2])
INV = cni_exec.Invocation("ADD", "sb1", "/run/netns/x", "eth0", "IgnoreUnknown=1;K8S_POD_NAME=p")


async def test_environment_and_result(tmp_path: Path) -> None:
    p = plugin(tmp_path, "ok", "print(json.dumps({'cniVersion': '1.0.0', 'ips': [{'address': '10.0.0.2/24'}]}))")
    out = await cni_exec.invoke(p, INV, {"cniVersion": "1.0.0", "name": "n"}, [tmp_path], 5)
    assert out == {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/24"}]}
    env = calls(tmp_path, "ok")[0]["env"]
    assert env == {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "sb1", "CNI_NETNS": "/run/netns/x",
                   "CNI_IFNAME": "eth0", "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAME=p", "CNI_PATH": str(tmp_path)}


@pytest.mark.parametrize(("code", "kind"), [
    (7, errors.FailedPrecondition), (3, errors.NotFound), (11, errors.Unavailable), (2, errors.InvalidArgument),
    (999, errors.Internal),
])
async def test_cni_error_json_becomes_a_kind_with_the_message(tmp_path: Path, code: int,
                                                              kind: type[errors.NarwhalError]) -> None:
    p = plugin(tmp_path, "bad", f"print(json.dumps({{'cniVersion': '1.0.0', 'code': {code}, 'msg': 'no bridge', "
                                "'details': 'permission denied'}))\nsys.exit(1)")
    with pytest.raises(kind) as info:
        await cni_exec.invoke(p, INV, {}, [tmp_path], 5)
    assert info.value.message == "CNI plugin bad ADD failed: no bridge (permission denied)"


async def test_failure_without_json_reports_stderr(tmp_path: Path) -> None:
    p = plugin(tmp_path, "crash", "sys.stderr.write('panic: nil map\\n'); sys.exit(2)")
    with pytest.raises(errors.Internal, match="exit status 2: panic: nil map"):
        await cni_exec.invoke(p, INV, {}, [tmp_path], 5)


async def test_invalid_json_on_success_is_an_error(tmp_path: Path) -> None:
    p = plugin(tmp_path, "garbage", "print('not json')")
    with pytest.raises(errors.Internal, match="invalid JSON"):
        await cni_exec.invoke(p, INV, {}, [tmp_path], 5)


async def test_hung_plugin_and_its_children_are_killed(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    p = plugin(tmp_path, "hang", f"import subprocess\nc = subprocess.Popen(['sleep', '300'])\n"
                                 f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{c.pid}}')\ntime.sleep(300)")
    with pytest.raises(errors.DeadlineExceeded, match="hang ADD did not finish within 1s and was killed"):
        await cni_exec.invoke(p, INV, {}, [tmp_path], 1)
    for pid in map(int, pids.read_text().split()):
        assert await gone(pid), f"process {pid} outlived the timeout"


async def gone(pid: int) -> bool:
    """The process no longer runs (reaped, or a zombie awaiting its reaper)."""
    for _ in range(100):
        try:
            with open(f"/proc/{pid}/stat") as f:  # noqa: ASYNC230 - procfs, never blocks
                if f.read().split()[2] == "Z":
                    return True
        except FileNotFoundError:
            return True
        await asyncio.sleep(0.05)
    return False


def test_find_plugin(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    plugin(b, "bridge", "")
    assert cni_exec.find_plugin("bridge", [a, b]) == b / "bridge"
    with pytest.raises(errors.FailedPrecondition, match=f"'nope' not found in {a}:{b}"):
        cni_exec.find_plugin("nope", [a, b])
    with pytest.raises(errors.InvalidArgument):
        cni_exec.find_plugin("../bridge", [a, b])


def netlist(plugins: list[dict[str, object]], version: str = "1.0.0") -> NetworkConfigList:
    raw = {"cniVersion": version, "name": "net", "plugins": plugins}
    return NetworkConfigList("net", version, plugins, Path("x.conflist"), raw)


async def test_chain_passes_prev_result_and_only_declared_capabilities(tmp_path: Path) -> None:
    plugin(tmp_path, "first", "print(json.dumps({'cniVersion': '1.0.0', 'ips': [{'address': '10.0.0.2/24'}]}))")
    plugin(tmp_path, "second", "print(json.dumps(conf['prevResult']))")
    runner = Runner([tmp_path], 5)
    net = netlist([{"type": "first", "capabilities": {"ips": True}},
                   {"type": "second", "capabilities": {"portMappings": True, "ips": False}}])
    rc = {"ips": ["10.0.0.9"], "portMappings": [{"hostPort": 80, "containerPort": 8080, "protocol": "tcp"}]}
    progress: list[dict[str, object]] = []
    result = await runner.add(net, INV, rc, progress)
    assert result["ips"] == [{"address": "10.0.0.2/24"}] and len(progress) == 2
    first, second = calls(tmp_path, "first")[0]["conf"], calls(tmp_path, "second")[0]["conf"]
    assert first["runtimeConfig"] == {"ips": ["10.0.0.9"]} and "prevResult" not in first
    assert first["name"] == "net" and first["cniVersion"] == "1.0.0"
    assert second["runtimeConfig"] == {"portMappings": rc["portMappings"]}
    assert second["prevResult"] == result


async def test_del_runs_every_plugin_in_reverse_and_raises_the_first_failure(tmp_path: Path) -> None:
    plugin(tmp_path, "a", "pass")
    plugin(tmp_path, "b", "print(json.dumps({'code': 11, 'msg': 'busy'})); sys.exit(1)")
    runner = Runner([tmp_path], 5)
    inv = cni_exec.Invocation("DEL", "sb1", "", "eth0")
    prev = {"cniVersion": "1.0.0", "ips": []}
    with pytest.raises(errors.Unavailable, match="busy"):
        await runner.delete(netlist([{"type": "a"}, {"type": "b"}]), inv, {}, prev)
    assert calls(tmp_path, "a")[0]["conf"]["prevResult"] == prev
    # before CNI 0.4.0 DEL has no prevResult
    await runner.delete(netlist([{"type": "a"}], "0.3.1"), inv, {}, prev)
    assert "prevResult" not in calls(tmp_path, "a")[1]["conf"]


async def test_check_needs_cni_040(tmp_path: Path) -> None:
    runner = Runner([tmp_path], 5)
    with pytest.raises(errors.FailedPrecondition, match="has no CHECK"):
        await runner.check(netlist([{"type": "a"}], "0.3.1"), INV, {}, None)


async def test_validate_checks_versions(tmp_path: Path) -> None:
    plugin(tmp_path, "old", "print(json.dumps({'cniVersion': '0.3.1', 'supportedVersions': ['0.3.0', '0.3.1']}))")
    runner = Runner([tmp_path], 5)
    with pytest.raises(errors.FailedPrecondition, match="old does not support cniVersion '1.0.0'"):
        await runner.validate(netlist([{"type": "old"}]))
    await runner.validate(netlist([{"type": "old"}], "0.3.1"))


async def test_plugins_die_with_the_daemon(tmp_path: Path) -> None:
    """kill -9 of the caller mid-ADD leaves no plugin running (it would race the next start's GC)."""
    pid_file = tmp_path / "plugin.pid"
    plugin(tmp_path, "hang", f"open({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(300)")
    caller = await asyncio.create_subprocess_exec(
        sys.executable, "-c",
        "import asyncio, pathlib\nfrom pkg.cni import exec as e\n"
        f"asyncio.run(e.invoke(pathlib.Path({str(tmp_path / 'hang')!r}), e.Invocation('ADD'), {{}}, [], 300))",
        cwd=REPO,
    )
    for _ in range(200):
        if pid_file.exists() and pid_file.read_text():  # noqa: ASYNC240 - tiny test file
            break
        await asyncio.sleep(0.05)
    caller.kill()
    await caller.wait()
    assert await gone(int(pid_file.read_text()))  # noqa: ASYNC240
