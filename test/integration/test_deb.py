"""`make deb`: the package builds with dpkg-deb, declares what narwhald needs, ships its conffile and
unit, and its /opt/narwhal venv runs on Debian's own python3.11 (not the interpreter that built it).

The build takes ~30 s here with the dependency wheels cached in build/wheels (the first build fetches
them from PyPI); installing the package on this machine is done by hand (docs/install.md).
"""
from __future__ import annotations

import marshal
import os
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from lib.daemon import REPO

VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
NEEDS = ("python3.11", "containerd", "runc", "containernetworking-plugins", "iptables", "iproute2", "catatonit",
         "etcd-server")  # docker swarm init starts a private etcd member (docs/swarm.md)
SITE = "opt/narwhal/lib/python3.11/site-packages"


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("deb")
    env = {**os.environ, "WHEELS": str(REPO / "build" / "wheels")}  # the cache `make deb` uses too
    proc = subprocess.run([str(REPO / "packaging" / "build-deb.sh"), str(out)], capture_output=True, text=True,
                          env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    path = Path(proc.stdout.strip().splitlines()[-1])
    assert path == out / f"narwhal_{VERSION}_amd64.deb" and path.is_file()
    yield path
    shutil.rmtree(out, ignore_errors=True)


@pytest.fixture(scope="module")
def tree(deb: Path) -> Path:
    root = deb.parent / "root"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    return root


def field(info: str, name: str) -> str:
    for line in info.splitlines():
        if line.strip().startswith(f"{name}:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no {name} in {info}")


def test_info_shows_dependencies_conffile_and_scripts(deb: Path) -> None:
    info = subprocess.run(["dpkg-deb", "--info", str(deb)], capture_output=True, text=True, check=True).stdout
    assert field(info, "Package") == "narwhal" and field(info, "Version") == VERSION
    assert field(info, "Architecture") == "amd64"
    depends = [d.strip().split()[0] for d in field(info, "Depends").split(",")]
    assert sorted(depends) == sorted(NEEDS)
    for script in ("conffiles", "postinst", "prerm", "postrm", "md5sums"):
        assert f" {script} " in info
    conffiles = subprocess.run(["dpkg-deb", "--ctrl-tarfile", str(deb)], capture_output=True, check=True).stdout
    listed = subprocess.run(["tar", "-xOf", "-", "./conffiles"], input=conffiles, capture_output=True,
                            check=True).stdout.decode().split()
    assert listed == ["/etc/narwhal/narwhald.yaml"]


def test_tree_has_command_unit_conffile_and_stubs(tree: Path) -> None:
    assert os.readlink(tree / "usr/bin/narwhald") == "/opt/narwhal/bin/narwhald"
    for script in ("narwhald", "narwhal-logger"):
        assert (tree / "opt/narwhal/bin" / script).read_text().splitlines()[0] == "#!/opt/narwhal/bin/python"
    assert os.readlink(tree / "opt/narwhal/bin/python3.11") == "/usr/bin/python3.11"
    assert "home = /usr/bin" in (tree / "opt/narwhal/pyvenv.cfg").read_text()
    assert (tree / "lib/systemd/system/narwhald.service").is_file()
    assert (tree / "etc/narwhal/narwhald.yaml").read_text() == (REPO / "packaging/narwhald.yaml").read_text()
    assert (tree / SITE / "pkg/containerd/api/services/tasks/v1/tasks_pb2_grpc.py").is_file()
    assert (tree / SITE / "pkg/runtime/seccomp_default.json").is_file()
    # Compiled for where they will live, not for the staging dir they were built in.
    pyc = next((tree / SITE / "narwhal/__pycache__").glob("main.cpython-311.pyc"))
    code = marshal.loads(pyc.read_bytes()[16:])
    assert code.co_filename == f"/{SITE}/narwhal/main.py"
    leaked = subprocess.run(["grep", "-rIl", "deb-work", str(tree)], capture_output=True, text=True).stdout
    assert leaked == ""


def test_venv_runs_on_debians_python(tree: Path) -> None:
    python = tree / "opt/narwhal/bin/python"
    probe = ("import sys, grpc, aiohttp, yaml, cri_api.v1.api_pb2, pkg.containerd.api.services.tasks.v1.tasks_pb2, "
             "narwhal.daemon; print(sys.base_prefix, sys.version_info[:2])")
    proc = subprocess.run([str(python), "-I", "-c", probe], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["/usr", "(3,", "11)"]
    helped = subprocess.run([str(python), "-I", "-c", "from narwhal.main import main; main(['cleanup', '--help'])"],
                            capture_output=True, text=True)
    assert helped.returncode == 0 and "--remove-dirs" in helped.stdout


def test_systemd_analyze_verify_passes(tree: Path) -> None:
    """Verified inside the package's own tree (ExecStart must exist there), with the host's units for the
    targets it names (systemd need not be PID 1 for this)."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (make setup installs systemd)")
    units = tree / "lib/systemd/system"
    for unit in Path("/lib/systemd/system").iterdir():
        if unit.is_file() and not (units / unit.name).exists():
            shutil.copy(unit, units / unit.name)
    (tree / "bin").mkdir(exist_ok=True)
    shutil.copy("/bin/kill", tree / "bin/kill")  # ExecReload's
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no", f"--root={tree}", "narwhald.service"],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == "", proc.stderr
