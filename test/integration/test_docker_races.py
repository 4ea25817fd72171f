"""Short-lived containers through the real docker CLI, in loops, idle and beside a CPU hog: nothing of their
output may be lost, whatever the timing of the exit, the logger, the attach and AutoRemove (issue 13: most
`docker run --rm busybox echo hi` printed nothing on an idle machine).  Every run asserts the exact stdout,
stderr and exit code; no sleeps, only waits on what the CLI returns."""
from __future__ import annotations

import subprocess
from collections.abc import Iterator

import docker
import pytest
from docker.utils.socket import consume_socket_output, demux_adaptor, frames_iter
from lib import cpuhog
from lib.docker import BUSYBOX, DOCKER, DockerDaemon, docker_daemon, eventually
from lib.leaks import leftovers
from lib.registry import Registry

RUNS = 50


@pytest.fixture(scope="module")
def dd(registry: Registry) -> Iterator[DockerDaemon]:
    yield from docker_daemon(registry)


def _check(proc: subprocess.CompletedProcess[str], out: str, err: str, code: int, what: str) -> list[str]:
    got = (proc.stdout, proc.stderr, proc.returncode)
    return [] if got == (out, err, code) else [f"{what}: expected {(out, err, code)!r}, got {got!r}"]


def _assert_clean(dd: DockerDaemon) -> None:
    assert dd.out("ps", "-aq") == ""
    assert leftovers(dd.daemon) == {}


@pytest.mark.parametrize("load", cpuhog.LOADS)
def test_run_rm_never_loses_output(dd: DockerDaemon, load: str) -> None:
    """Every other run the plain form; between them -a stdout (stderr not attached), -t (one stream, CRLF),
    -i with input (the logger narwhald runs on fifos) and echo alone."""
    failures: list[str] = []
    with cpuhog.load(load):
        for i in range(RUNS):
            script = f"echo out{i}; echo err{i} >&2; exit 3"
            variant = 0 if i % 2 == 0 else 1 + (i // 2) % 4
            if variant == 0:
                proc = dd.docker("run", "--rm", BUSYBOX, "sh", "-c", script, check=False)
                failures += _check(proc, f"out{i}\n", f"err{i}\n", 3, f"run {i}")
            elif variant == 1:
                proc = dd.docker("run", "--rm", "-a", "stdout", BUSYBOX, "sh", "-c", script, check=False)
                failures += _check(proc, f"out{i}\n", "", 3, f"-a stdout {i}")
            elif variant == 2:
                proc = dd.docker("run", "--rm", "-t", BUSYBOX, "sh", "-c", script, check=False)
                failures += _check(proc, f"out{i}\nerr{i}\n", "", 3, f"-t {i}")  # CRLF, read as text
            elif variant == 3:
                proc = dd.docker("run", "--rm", "-i", BUSYBOX, "sh", "-c", f"read x; echo got${{x}}{i}; exit 4",
                                 check=False, input_=f"in{i}\n")
                failures += _check(proc, f"gotin{i}{i}\n", "", 4, f"-i {i}")
            else:
                proc = dd.docker("run", "--rm", BUSYBOX, "echo", f"hi{i}", check=False)
                failures += _check(proc, f"hi{i}\n", "", 0, f"echo {i}")
    assert not failures, f"{len(failures)} of {RUNS} runs lost something:\n" + "\n".join(failures[:10])
    _assert_clean(dd)


@pytest.mark.parametrize("load", cpuhog.LOADS)
def test_detached_run_then_wait_logs_and_cp(dd: DockerDaemon, load: str) -> None:
    """docker run -d, then at once: logs -f (ends with the container, complete), wait, logs, cp."""
    failures: list[str] = []
    runs = 10
    with cpuhog.load(load):
        for i in range(runs):
            name = f"race-d{i}"
            dd.docker("run", "-d", "--name", name, BUSYBOX, "sh", "-c",
                      f"echo data{i} > /f; echo out{i}; echo err{i} >&2; exit 5")
            failures += _check(dd.docker("logs", "-f", name, check=False), f"out{i}\n", f"err{i}\n", 0,
                               f"logs -f {i}")
            failures += _check(dd.docker("wait", name, check=False), "5\n", "", 0, f"wait {i}")
            failures += _check(dd.docker("logs", name, check=False), f"out{i}\n", f"err{i}\n", 0, f"logs {i}")
            cp = subprocess.run(f"{DOCKER} cp {name}:/f - | tar -xO", shell=True, capture_output=True,
                                text=True, env=dd.daemon.docker_env(), timeout=60)
            failures += _check(cp, f"data{i}\n", "", 0, f"cp {i}")
            dd.docker("rm", name)
    assert not failures, f"{len(failures)} checks failed:\n" + "\n".join(failures[:10])
    _assert_clean(dd)


@pytest.mark.parametrize("load", cpuhog.LOADS)
def test_exec_output_and_exit_codes(dd: DockerDaemon, load: str) -> None:
    dd.docker("run", "-d", "--name", "race-exec", BUSYBOX, "sleep", "100000")
    failures: list[str] = []
    try:
        with cpuhog.load(load):
            for i in range(RUNS):
                if i % 5 == 4:
                    proc = dd.docker("exec", "-t", "race-exec", "sh", "-c", f"echo tty{i}; exit 2", check=False)
                    failures += _check(proc, f"tty{i}\n", "", 2, f"exec -t {i}")
                    continue
                proc = dd.docker("exec", "race-exec", "sh", "-c", f"echo out{i}; echo err{i} >&2; exit 4",
                                 check=False)
                failures += _check(proc, f"out{i}\n", f"err{i}\n", 4, f"exec {i}")
    finally:
        dd.docker("rm", "-f", "race-exec")
    assert not failures, f"{len(failures)} of {RUNS} execs lost something:\n" + "\n".join(failures[:10])
    _assert_clean(dd)



def test_dockerpy_attach_before_start_loses_nothing(dd: DockerDaemon) -> None:
    """docker-py's own order for an attached run (docker-compose's and dockerpty's too when they attach first):
    attach with stream=1 to a created container, then start it; the socket must carry every byte of a command
    that exits at once, framed per stream, and then end."""
    client = docker.APIClient(base_url=f"unix://{dd.daemon.docker_socket}", timeout=60)
    failures: list[str] = []
    try:
        for i in range(20):
            cid = client.create_container(BUSYBOX, ["sh", "-c", f"echo out{i}; echo err{i} >&2; exit 3"],
                                          host_config=client.create_host_config(auto_remove=True))["Id"]
            sock = client.attach_socket(cid, params={"stdout": 1, "stderr": 1, "stream": 1})
            client.start(cid)
            frames = frames_iter(sock, tty=False)
            out, err = consume_socket_output((demux_adaptor(*f) for f in frames), demux=True)
            raw = getattr(sock, "_sock", sock)  # the SocketIO and the socket under it
            sock.close()
            raw.close()
            got = (out or b"", err or b"")
            if got != (f"out{i}\n".encode(), f"err{i}\n".encode()):
                failures.append(f"run {i}: {got!r}")
    finally:
        client.close()
    assert not failures, "\n".join(failures)
    # AutoRemove ends after the attach stream does, the sandbox's teardown last
    assert eventually(lambda: dd.out("ps", "-aq") == "" and leftovers(dd.daemon) == {})
