"""The container lifecycle as `docker events` shows it, compared with what moby emits for the same commands
(daemon/stop.go, kill.go, monitor.go, exec.go, attach.go, start.go, volumes): the sequence of actions and their
attributes, read back through the real docker CLI with --since/--until (no sleeps)."""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from lib.docker import BUSYBOX, DockerDaemon, docker_daemon
from lib.leaks import leftovers
from lib.registry import Registry

# A main process that exits on SIGTERM (sleep as PID 1 ignores it).
OBEYS_TERM = ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.1; done"]


@pytest.fixture(scope="module")
def dd(registry: Registry) -> Iterator[DockerDaemon]:
    yield from docker_daemon(registry)


def _events(dd: DockerDaemon, since: float, *filters: str) -> list[dict[str, Any]]:
    until = time.time() + 1  # a bound in the (near) future: everything published so far is in the answer
    args = ["events", "--since", f"{since:.9f}", "--until", f"{until:.9f}", "--format", "{{json .}}"]
    for f in filters:
        args += ["--filter", f]
    return [json.loads(line) for line in dd.out(*args).splitlines() if line.strip()]


def _actions(events: list[dict[str, Any]], type_: str = "container") -> list[str]:
    return [e["Action"] for e in events if e["Type"] == type_]


def _attrs(events: list[dict[str, Any]], action: str) -> dict[str, str]:
    found: list[dict[str, str]] = [e["Actor"]["Attributes"] for e in events if e["Action"] == action]
    assert len(found) == 1, found
    return found[0]


def test_stop_kill_restart_sequences(dd: DockerDaemon) -> None:
    since = time.time()
    # docker stop of a process that ignores SIGTERM: the stop signal, SIGKILL after the timeout, die, stop.
    stubborn = dd.out("run", "-d", "--name", "ev-stubborn", BUSYBOX, "sleep", "100000")
    dd.out("stop", "-t", "1", "ev-stubborn")
    got = _events(dd, since, f"container={stubborn}")
    assert _actions(got) == ["create", "start", "kill", "kill", "die", "stop"]
    assert [e["Actor"]["Attributes"].get("signal") for e in got if e["Action"] == "kill"] == ["15", "9"]
    die = _attrs(got, "die")
    assert die["exitCode"] == "137" and die["execDuration"].isdigit() and die["name"] == "ev-stubborn"
    assert _attrs(got, "stop") == {"image": BUSYBOX, "name": "ev-stubborn"}

    # One that obeys it: one kill, die with its own code, stop.
    polite = dd.out("run", "-d", "--name", "ev-polite", BUSYBOX, *OBEYS_TERM)
    dd.out("stop", "ev-polite")
    got = _events(dd, since, f"container={polite}")
    assert _actions(got) == ["create", "start", "kill", "die", "stop"]
    assert _attrs(got, "kill")["signal"] == "15" and _attrs(got, "die")["exitCode"] == "0"

    # docker kill: one kill per signal sent; no stop (moby logs stop only for docker stop).
    killed = dd.out("run", "-d", "--name", "ev-killed", BUSYBOX, *OBEYS_TERM)
    dd.out("kill", "-s", "USR1", "ev-killed")  # the shell ignores it: still running
    dd.out("kill", "ev-killed")
    got = _events(dd, since, f"container={killed}")
    assert _actions(got) == ["create", "start", "kill", "kill", "die"]
    assert [e["Actor"]["Attributes"]["signal"] for e in got if e["Action"] == "kill"] == ["10", "9"]

    # docker restart: the stop's events, then start and restart.
    again = dd.out("run", "-d", "--name", "ev-restart", BUSYBOX, *OBEYS_TERM)
    dd.out("restart", "ev-restart")
    got = _events(dd, since, f"container={again}")
    assert _actions(got) == ["create", "start", "kill", "die", "stop", "start", "restart"]

    # pause, unpause, rename (oldName), update, then rm -f of a running container: kill 9, die, destroy.
    dd.out("pause", "ev-restart")
    dd.out("unpause", "ev-restart")
    dd.out("rename", "ev-restart", "ev-renamed")
    dd.out("update", "--cpu-shares", "512", "ev-renamed")
    dd.out("rm", "-f", "ev-renamed", "ev-stubborn", "ev-polite", "ev-killed")
    got = _events(dd, since, f"container={again}")
    assert _actions(got)[7:] == ["pause", "unpause", "rename", "update", "kill", "die", "destroy"]
    assert _attrs(got, "rename") == {"image": BUSYBOX, "name": "ev-renamed", "oldName": "/ev-restart"}
    assert [e["Actor"]["Attributes"]["signal"] for e in got if e["Action"] == "kill"][-1] == "9"
    assert dd.out("ps", "-aq") == ""
    assert leftovers(dd.daemon) == {}


def test_exec_attach_and_volume_events(dd: DockerDaemon) -> None:
    since = time.time()
    box = dd.out("run", "-d", "--name", "ev-exec", BUSYBOX, "sleep", "100000")
    assert dd.docker("exec", "ev-exec", "sh", "-c", "exit 3", check=False).returncode == 3
    got = [e for e in _events(dd, since, f"container={box}") if e["Action"].startswith("exec_")]
    assert [e["Action"] for e in got] == ["exec_create: sh -c exit 3", "exec_start: sh -c exit 3", "exec_die"]
    exec_ids = {e["Actor"]["Attributes"]["execID"] for e in got}
    assert len(exec_ids) == 1 and len(exec_ids.pop()) == 64
    assert got[2]["Actor"]["Attributes"]["exitCode"] == "3"
    dd.out("rm", "-f", "ev-exec")

    # docker run --rm attaches before it starts; a named volume is mounted at the start, unmounted at the exit.
    dd.out("volume", "create", "ev-vol")
    dd.out("run", "--rm", "--name", "ev-att", "-v", "ev-vol:/data:ro", BUSYBOX, "true")
    got = _events(dd, since, "container=ev-att")
    assert _actions(got) == ["create", "attach", "start", "die", "destroy"]
    everything = _events(dd, since)
    order = [(e["Type"], e["Action"]) for e in everything
             if e["Actor"]["Attributes"].get("name") == "ev-att" or e["Actor"]["ID"] == "ev-vol"]
    start, die = order.index(("container", "start")), order.index(("container", "die"))
    assert order.index(("volume", "mount")) < start and start < order.index(("volume", "unmount")) < die
    mount = _attrs([e for e in everything if e["Type"] == "volume"], "mount")
    cid = got[0]["Actor"]["ID"]
    assert mount == {"container": cid, "destination": "/data", "driver": "local", "propagation": "",
                     "read/write": "false"}
    assert _attrs([e for e in everything if e["Type"] == "volume"], "unmount") == {"container": cid,
                                                                                    "driver": "local"}
    dd.out("volume", "rm", "ev-vol")
    assert leftovers(dd.daemon) == {}


def test_network_connect_disconnect_events(dd: DockerDaemon) -> None:
    """moby logs ``connect`` as a container's start joins each network (initializeNetworking) and
    ``disconnect`` as its exit releases them (Cleanup, before "die"); a create, a connect to a stopped
    container and a removal log none, a connect/disconnect of a running one logs at once."""
    since = time.time()
    net = dd.out("network", "create", "ev-net")
    box = dd.out("create", "--name", "ev-netbox", "--network", "ev-net", BUSYBOX, *OBEYS_TERM)
    dd.out("network", "connect", "bridge", "ev-netbox")  # stopped: nothing logged yet
    assert _events(dd, since, "type=network", "event=connect") == []
    dd.out("start", "ev-netbox")
    dd.out("network", "disconnect", "bridge", "ev-netbox")  # running: logged now
    dd.out("stop", "ev-netbox")
    dd.out("rm", "ev-netbox")

    got = _events(dd, since, "type=network", "network=ev-net")
    assert [e["Action"] for e in got] == ["create", "connect", "disconnect"]
    for e in got[1:]:
        assert e["Actor"]["ID"] == net
        assert e["Actor"]["Attributes"] == {"container": box, "name": "ev-net", "type": "bridge"}
    bridge = _events(dd, since, "type=network", "network=bridge")
    assert [(e["Action"], e["Actor"]["Attributes"]["container"]) for e in bridge] == [
        ("connect", box), ("disconnect", box)]
    assert [e["Action"] for e in _events(dd, since, "type=network", "event=disconnect", "network=bridge")] == [
        "disconnect"]

    # In the whole stream: both connects before "start", the explicit disconnect while it ran, the exit's
    # disconnect between the stop signal and "die", nothing after "destroy".
    order = [(e["Type"], e["Action"], e["Actor"]["Attributes"].get("name")) for e in _events(dd, since)
             if e["Actor"]["ID"] == box or e["Actor"]["Attributes"].get("container") == box]
    assert order == [
        ("container", "create", "ev-netbox"),
        ("network", "connect", "ev-net"), ("network", "connect", "bridge"),
        ("container", "start", "ev-netbox"),
        ("network", "disconnect", "bridge"),
        ("container", "kill", "ev-netbox"),
        ("network", "disconnect", "ev-net"),
        ("container", "die", "ev-netbox"), ("container", "stop", "ev-netbox"),
        ("container", "destroy", "ev-netbox"),
    ], order

    # docker run --rm on the default bridge: connect before start, disconnect before die, none at the removal.
    dd.out("run", "--rm", "--name", "ev-netrun", BUSYBOX, "true")
    run = [(e["Type"], e["Action"]) for e in _events(dd, since)
           if e["Actor"]["Attributes"].get("name") == "ev-netrun"
           or (e["Type"] == "network" and e["Actor"]["Attributes"].get("container") not in (None, box))]
    assert run == [("container", "create"), ("container", "attach"), ("network", "connect"),
                   ("container", "start"), ("network", "disconnect"), ("container", "die"),
                   ("container", "destroy")], run
    # host and none have no endpoint, but moby connects the container to that predefined network all the same.
    for mode, driver in (("none", "null"), ("host", "host")):
        cid = dd.out("run", "-d", "--network", mode, BUSYBOX, "true")
        dd.out("wait", cid)
        dd.out("rm", cid)
        got = [(e["Action"], e["Actor"]["Attributes"]) for e in _events(dd, since, "type=network", f"network={mode}")]
        assert got == [(action, {"container": cid, "name": mode, "type": driver})
                       for action in ("connect", "disconnect")], got
    dd.out("network", "rm", "ev-net")
    assert leftovers(dd.daemon) == {}
