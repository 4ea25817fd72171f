"""pkg.docker.engine without a daemon: names, the image merge and core translation, restart decisions and backoff,
records on disk, and the Docker JSON of the container endpoints (parsing, filters, status text)."""
from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

import pytest

from dockerapi import filters as docker_filters
from dockerapi.handlers import containers_filters as cf
from dockerapi.handlers import containers_json as cj
from dockerapi.handlers import containers_request as creq
from pkg import errors
from pkg.docker.engine import health, mounts, names, translate
from pkg.docker.engine.lifecycle import BACKOFF_MAX, BACKOFF_START, Lifecycle
from pkg.docker.engine.model import (
    ContainerSpec,
    EngineContainer,
    EngineRecord,
    EngineState,
    Health,
    HealthConfig,
    HealthStatus,
    HostConfig,
    PortBinding,
    ProbeResult,
    Resources,
    RestartPolicy,
    RestartPolicyName,
    Status,
    Ulimit,
)
from pkg.docker.engine.records import RecordStore
from pkg.docker.engine.registry import Registry
from pkg.docker.engine.signals import parse_signal
from pkg.docker.volumes.model import MountPoint, MountType
from pkg.images.model import ImageConfig
from pkg.model.container import ContainerStatus
from pkg.model.state import ContainerState, DockerState
from pkg.runtime.resources import Rlimit
from pkg.runtime.seccomp import RUNTIME_DEFAULT, UNCONFINED

CID = "a" * 64


def record(**changes: object) -> EngineRecord:
    base = EngineRecord(id=CID, name="web", sandbox_id="s" * 64, owns_sandbox=True, image_id="sha256:" + "b" * 64,
                        created=1_700_000_000 * 10**9, config=ContainerSpec(image="busybox", cmd=("sleep", "1")),
                        host_config=HostConfig())
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def view(rec: EngineRecord | None = None, state: ContainerState = ContainerState.RUNNING,
         **status: int) -> EngineContainer:
    return EngineContainer(rec or record(), ContainerStatus(state, **status))  # type: ignore[arg-type]


# ---------------- names ----------------
def test_names_follow_dockers_rules() -> None:
    assert names.validate("/web-1") == "web-1"
    for bad in ("x", "-web", "a b", "web/1", ""):
        with pytest.raises(errors.InvalidArgument, match="Invalid container name"):
            names.validate(bad)
    for attempt in (0, 3):
        name = names.random_name(attempt)
        assert names.VALID.match(name) and "_" in name and name != "boring_wozniak"


# ---------------- translation ----------------
def test_merge_image_as_docker_stores_it() -> None:
    image = ImageConfig(entrypoint=["/entry"], cmd=["serve"], env=["PATH=/bin", "A=image"], working_dir="/srv",
                        user="nobody", labels={"from": "image", "k": "image"}, exposed_ports=["80/tcp"],
                        stop_signal="SIGQUIT")
    merged = translate.merge_image(ContainerSpec(image="x", env=("A=mine",), labels={"k": "mine"}), image)
    assert merged.entrypoint == ("/entry",) and merged.cmd == ("serve",)
    assert merged.env == ("PATH=/bin", "A=mine")
    assert merged.labels == {"from": "image", "k": "mine"}
    assert (merged.working_dir, merged.user, merged.stop_signal) == ("/srv", "nobody", "SIGQUIT")
    assert merged.exposed_ports == ("80/tcp",)
    # An entrypoint of one's own drops the image's CMD (Docker's rule).
    own = translate.merge_image(ContainerSpec(image="x", entrypoint=("sh",)), image)
    assert own.entrypoint == ("sh",) and own.cmd == ()
    with pytest.raises(errors.InvalidArgument, match="no command specified"):
        translate.argv(translate.merge_image(ContainerSpec(image="x"), ImageConfig()))


def test_sandbox_and_container_config() -> None:
    host = HostConfig(network_mode="none", dns=("1.1.1.1",), extra_hosts=("db:10.0.0.5",), init=True,
                      port_bindings=(PortBinding(80, "tcp", "127.0.0.1", 8080),),
                      resources=Resources(memory=64 << 20, nano_cpus=1_500_000_000, pids_limit=-1))
    rec = record(host_config=host, port_bindings=host.port_bindings,
                 config=ContainerSpec(image="busybox", cmd=("top",), user="1000:1000", env=("A=b", "EMPTY")))
    sandbox = translate.sandbox_config(rec, Path("/logs"))
    assert sandbox.no_network and sandbox.hostname == CID[:12] and sandbox.uid == CID
    assert sandbox.labels == {translate.ENGINE_LABEL: CID}
    assert sandbox.dns is not None and sandbox.dns.servers == ("1.1.1.1",)
    assert [(p.container_port, p.host_port, p.host_ip) for p in sandbox.port_mappings] == [(80, 8080, "127.0.0.1")]
    config = translate.container_config(rec, f"{CID}/container.log", [])
    assert config.command == [translate.INIT_PATH, "--", "top"]
    assert any(m.container_path == translate.INIT_PATH and m.readonly for m in config.mounts)
    assert config.envs == [("A", "b"), ("EMPTY", "")]
    assert config.security.run_as_username == "1000:1000"
    assert config.resources is not None
    assert (config.resources.cpu_quota, config.resources.cpu_period) == (150_000, 100_000)
    assert config.resources.memory_limit_in_bytes == 64 << 20 and config.resources.pids_limit == 0
    limited = record(host_config=HostConfig(shm_size=1 << 20, ulimits=(Ulimit("nofile", 10, 20),)))
    assert translate.sandbox_config(limited, Path("/l")).shm_size == 1 << 20
    assert translate.container_config(limited, "l", []).rlimits == [Rlimit("nofile", 10, 20)]
    host_net = translate.sandbox_config(record(host_config=HostConfig(network_mode="host")), Path("/l"))
    assert host_net.host_network and host_net.hostname == ""
    user_net = translate.sandbox_config(record(host_config=HostConfig(network_mode="backend")), Path("/l"))
    assert [n.network for n in user_net.networks] == ["backend"]


def test_resource_validation_and_ephemeral_ports() -> None:
    with pytest.raises(errors.InvalidArgument, match="Minimum memory limit"):
        translate.core_resources(Resources(memory=1024))
    with pytest.raises(errors.InvalidArgument, match="Nano CPUs"):
        translate.core_resources(Resources(nano_cpus=1, cpu_quota=1))
    spec = ContainerSpec(image="x", exposed_ports=("80/tcp", "53/udp"))
    resolved = translate.resolve_ports(spec, HostConfig(publish_all_ports=True,
                                                        port_bindings=(PortBinding(80, "tcp", "", 8080),)))
    assert {(b.container_port, b.protocol) for b in resolved} == {(80, "tcp"), (53, "udp")}
    assert all(b.host_port > 0 for b in resolved) and resolved[0].host_port == 8080


# ---------------- restart policy ----------------
def _lifecycle(tmp_path: Path) -> Lifecycle:
    async def remove(_: str) -> None:
        return None

    return Lifecycle(Registry(RecordStore(tmp_path)), None, None, remove)  # type: ignore[arg-type]


@pytest.mark.parametrize(("policy", "code", "count", "stopped", "expected"), [
    (RestartPolicy(), 1, 0, False, False),
    (RestartPolicy(RestartPolicyName.ALWAYS), 0, 5, False, True),
    (RestartPolicy(RestartPolicyName.ALWAYS), 0, 0, True, False),
    (RestartPolicy(RestartPolicyName.UNLESS_STOPPED), 0, 0, False, True),
    (RestartPolicy(RestartPolicyName.ON_FAILURE), 0, 0, False, False),
    (RestartPolicy(RestartPolicyName.ON_FAILURE), 2, 9, False, True),
    (RestartPolicy(RestartPolicyName.ON_FAILURE, 2), 2, 1, False, True),
    (RestartPolicy(RestartPolicyName.ON_FAILURE, 2), 2, 2, False, False),
])
def test_should_restart(tmp_path: Path, policy: RestartPolicy, code: int, count: int, stopped: bool,
                        expected: bool) -> None:
    rec = record(host_config=HostConfig(restart_policy=policy),
                 state=EngineState(restart_count=count, manually_stopped=stopped))
    assert _lifecycle(tmp_path).should_restart(rec, code) is expected


def test_backoff_doubles_and_resets(tmp_path: Path) -> None:
    life = _lifecycle(tmp_path)
    delays = [life._next_delay(CID, 0.5) for _ in range(12)]
    assert delays[:3] == [BACKOFF_START, BACKOFF_START * 2, BACKOFF_START * 4]
    assert delays[-1] == BACKOFF_MAX
    assert life._next_delay(CID, 11.0) == BACKOFF_START  # it stayed up: start over


def test_signals() -> None:
    assert parse_signal("KILL") == parse_signal("SIGKILL") == parse_signal("9") == 9
    assert parse_signal(None, 15) == 15
    with pytest.raises(errors.InvalidArgument, match="Invalid signal: NOPE"):
        parse_signal("NOPE")


# ---------------- records and registry ----------------
def test_records_round_trip_and_registry(tmp_path: Path) -> None:
    async def body() -> None:
        store = RecordStore(tmp_path / "engine")
        registry = Registry(store)
        rec = record(host_config=HostConfig(restart_policy=RestartPolicy(RestartPolicyName.ON_FAILURE, 3)))
        await store.write(rec)
        (tmp_path / "engine" / ("c" * 64)).mkdir()  # a create cut short before its record
        loaded, broken = await store.load_all()
        assert loaded == [rec] and broken == ["c" * 64]
        registry.add(rec)
        assert registry.resolve("web") == registry.resolve("/web") == registry.resolve("aaa") == CID
        with pytest.raises(errors.NotFound, match="No such container: nope"):
            registry.resolve("nope")
        with pytest.raises(errors.Conflict, match='name "/web" is already in use by container "' + CID):
            registry.reserve_name("web", "d" * 64)
        await registry.transition(CID, DockerState.REMOVING, restart_count=2)
        reloaded, _ = await store.load_all()
        assert reloaded[0].state.restart_count == 2 and reloaded[0].state.removing

    asyncio.run(body())


# ---------------- Docker JSON ----------------
def test_create_body_parsing() -> None:
    body = {"Image": "busybox", "Cmd": ["sh"], "ExposedPorts": {"80": {}}, "StopTimeout": 3,
            "NetworkingConfig": {"EndpointsConfig": {"net": {"Aliases": ["db"],
                                                             "IPAMConfig": {"IPv4Address": "1.2.3.4"}}}}}
    spec = creq.container_spec(body)
    assert spec.exposed_ports == ("80/tcp",) and spec.stop_timeout == 3
    assert spec.endpoints[0].aliases == ("db",) and spec.endpoints[0].ipv4_address == "1.2.3.4"
    host = creq.host_config({"Binds": ["/src:/dst:ro,rshared", "vol:/data", "/anon"], "Tmpfs": {"/run": "size=64k"},
                           "Mounts": [{"Type": "tmpfs", "Target": "/scratch", "TmpfsOptions": {"Mode": 0o700}}],
                           "PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": ""}]}, "NetworkMode": "default",
                           "RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 2}})
    requested = mounts.specs(host)
    kinds = [(m.type, m.target, m.source, m.read_only, m.propagation) for m in requested]
    assert kinds == [(MountType.BIND, "/dst", "/src", True, "rshared"), (MountType.VOLUME, "/data", "vol", False, ""),
                     (MountType.VOLUME, "/anon", "", False, ""), (MountType.TMPFS, "/scratch", "", False, ""),
                     (MountType.TMPFS, "/run", "", False, "")]
    assert requested[4].tmpfs_size == 64 << 10 and requested[3].tmpfs_mode == 0o700
    core = mounts.core_mounts([MountPoint(MountType.TMPFS, "/run", tmpfs_size=1024),
                               MountPoint(MountType.BIND, "/dst", "/src", rw=False)])
    assert core[0].tmpfs and core[0].tmpfs_size == 1024 and not core[1].tmpfs and core[1].readonly
    assert host.port_bindings == (PortBinding(80, "tcp", "", 0),) and host.network_mode == "bridge"
    assert host.restart_policy == RestartPolicy(RestartPolicyName.ON_FAILURE, 2)
    for bad, message in (({"RestartPolicy": {"Name": "sometimes"}}, "unknown policy 'sometimes'"),
                         ({"Binds": ["/a:rel"]}, "invalid mount path"),
                         ({"Binds": ["/a:/b:bogus"]}, "invalid mode: bogus"),
                         ({"Binds": ["/a:/b", "/c:/b"]}, "Duplicate mount point: /b"),
                         ({"PortBindings": {"80/tcp": [{"HostPort": "99999"}]}}, "invalid port")):
        with pytest.raises(errors.InvalidArgument, match=message):
            mounts.specs(creq.host_config(bad))
    with pytest.raises(errors.InvalidArgument):
        creq.container_spec({"Cmd": ["x"]})
    assert creq.host_config({"Links": ["db:alias", "/cache"]}).links == ("db:alias", "/cache")
    with pytest.raises(errors.InvalidArgument, match="bad format for links: a:b:c"):
        creq.host_config({"Links": ["a:b:c"]})
    assert creq.host_config({"VolumesFrom": ["other:ro"]}).volumes_from == ("other:ro",)


def test_inspect_and_summary_shapes() -> None:
    rec = record(config=ContainerSpec(image="busybox", cmd=("sleep", "1 0"), exposed_ports=("80/tcp", "81/tcp")),
                 port_bindings=(PortBinding(80, "tcp", "", 32768),), log_path="/l")
    running = view(rec, pid=42, started_at=10**9)
    body = cj.inspect_json(running, "/sb", "/netns")
    assert body["Name"] == "/web" and body["Path"] == "sleep" and body["Args"] == ["1 0"]
    assert body["State"]["Status"] == "running" and body["State"]["Pid"] == 42
    assert body["State"]["FinishedAt"] == "0001-01-01T00:00:00Z"  # Go's zero time: never
    assert body["State"]["StartedAt"].startswith("1970-01-01T00:00:01")
    assert body["NetworkSettings"]["Ports"] == {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "32768"}], "81/tcp": None}
    json.dumps(body)
    summary = cj.summary_json(running, now=11.0)
    assert summary["Names"] == ["/web"] and summary["Command"] == "sleep '1 0'" and summary["State"] == "running"
    assert summary["Status"] == "Up 10 seconds"
    assert {"PrivatePort": 81, "Type": "tcp"} in summary["Ports"]
    exited = view(rec, ContainerState.EXITED, exit_code=3, started_at=10**9, finished_at=2 * 10**9)
    assert cj.status_text(exited, now=2 + 3600 * 3) == "Exited (3) 3 hours ago"
    assert cj.status_text(view(rec, ContainerState.CREATED)) == "Created"
    restarting = view(dataclasses.replace(rec, state=EngineState(extra=DockerState.RESTARTING)), ContainerState.EXITED,
                      exit_code=1, finished_at=10**9)
    state = cj.state_json(restarting)
    assert state["Status"] == "restarting" and state["Running"] and state["Restarting"] and state["Pid"] == 0
    assert cj.status_text(restarting, now=3.0) == "Restarting (1) 2 seconds ago"
    paused = view(dataclasses.replace(rec, state=EngineState(extra=DockerState.PAUSED)), started_at=10**9)
    assert paused.status == Status.PAUSED and cj.status_text(paused, now=62).endswith("(Paused)")
    assert cj.human_duration(90) == "About a minute" and cj.human_duration(0.5) == "Less than a second"


def test_summary_parts_kept_per_record() -> None:
    """docker ps reuses what only the record decides until the record is replaced (issue 21)."""
    rec = record(config=ContainerSpec(image="busybox", cmd=("true",), labels={"k": "1"}))
    first = cj.summary_json(view(rec, ContainerState.CREATED))
    again = cj.summary_json(view(rec, ContainerState.RUNNING, started_at=10**9), now=11.0)
    assert again["Labels"] is first["Labels"] and again["Status"] == "Up 10 seconds" and first["Status"] == "Created"
    updated = dataclasses.replace(rec, name="renamed", config=dataclasses.replace(rec.config, labels={"k": "2"}))
    changed = cj.summary_json(view(updated, ContainerState.CREATED))
    assert changed["Labels"] == {"k": "2"} and changed["Names"] == ["/renamed"]
    assert {k for k, v in changed.items() if v != first[k]} == {"Labels", "Names"}
    assert list(changed) == ["Id", "Names", "Image", "ImageID", "Command", "Created", "Ports", "Labels", "State",
                             "Status", "HostConfig", "NetworkSettings", "Mounts"]


def test_filters() -> None:
    web = view(record(config=ContainerSpec(image="busybox", labels={"k": "v"})))
    other = view(record(id="b" * 64, name="db", created=2, config=ContainerSpec(image="redis")),
                 ContainerState.EXITED, exit_code=1, finished_at=1)

    def names_for(raw: str) -> list[str]:
        keep = cf.matcher(docker_filters.parse(raw, cf.LIST_KEYS), None)  # type: ignore[arg-type]
        return [c.name for c in (web, other) if keep(c)]

    assert names_for('{"label": ["k=v"]}') == ["web"]
    assert names_for('{"label": ["k=w"]}') == []
    assert names_for('{"status": ["exited"]}') == ["db"]
    assert names_for('{"exited": ["1"]}') == ["db"]
    assert names_for('{"ancestor": ["busybox:latest"]}') == ["web"]
    assert names_for('{"name": ["^/d"]}') == ["db"]
    for bad in ('{"colour": ["x"]}', '{"status": ["sleepy"]}', "[1]"):
        with pytest.raises(errors.InvalidArgument):
            names_for(bad)
    keep = cf.prune_keeper(docker_filters.parse('{"label!": ["k=v"]}', cf.PRUNE_KEYS))
    assert keep(web) and not keep(other)
    assert cf.prune_keeper({})(web) is False
    assert not cf.prune_keeper({"until": ["1h"]})(web)  # created (2023) before an hour ago: pruned
    assert cf.prune_keeper({"until": ["0"]})(web)  # created after the epoch: kept


def test_security_options() -> None:
    assert translate.security_options(HostConfig()) == (False, RUNTIME_DEFAULT)
    assert translate.security_options(HostConfig(privileged=True)) == (False, None)
    assert translate.security_options(HostConfig(security_opt=("no-new-privileges", "seccomp=unconfined",
                                                               "apparmor=unconfined"))) == (True, UNCONFINED)
    assert translate.security_options(HostConfig(security_opt=("no-new-privileges:false",)))[0] is False
    for bad in ("seccomp=/some/profile.json", "bogus", "no-new-privileges=maybe"):
        with pytest.raises(errors.InvalidArgument):
            translate.security_options(HostConfig(security_opt=(bad,)))


def test_health_transitions() -> None:
    assert health.command(HealthConfig(("CMD-SHELL", "test -f /ok"))) == ["/bin/sh", "-c", "test -f /ok"]
    assert health.command(HealthConfig(("CMD", "true"))) == ["true"]
    assert health.command(HealthConfig(("NONE",))) is None
    with pytest.raises(errors.InvalidArgument):
        health.command(HealthConfig(("SHELL", "x")))
    ok, bad = ProbeResult(1, 2, 0, ""), ProbeResult(1, 2, 1, "no")
    state = Health()
    state = health.next_health(state, bad, retries=2, in_start_period=True)
    assert state.status == HealthStatus.STARTING and state.failing_streak == 0  # the start period forgives
    state = health.next_health(state, ok, retries=2, in_start_period=True)
    assert state.status == HealthStatus.HEALTHY
    state = health.next_health(state, bad, retries=2, in_start_period=False)
    assert state.status == HealthStatus.HEALTHY and state.failing_streak == 1
    state = health.next_health(state, bad, retries=2, in_start_period=False)
    assert state.status == HealthStatus.UNHEALTHY and len(state.log) == 4
    for _ in range(5):
        state = health.next_health(state, bad, retries=2, in_start_period=False)
    assert len(state.log) == health.KEEP_RESULTS
    running = view(record(config=ContainerSpec(image="x", healthcheck=HealthConfig(("CMD", "true")))),
                   started_at=10**9)
    assert cj.status_text(dataclasses.replace(running, health=state), now=3.0) == "Up 2 seconds (unhealthy)"
    assert cj.state_json(dataclasses.replace(running, health=state))["Health"]["FailingStreak"] == 7
