"""docker ps's encoded summaries (dockerapi/handlers/containers_ps.py): the same JSON as summary_json, re-encoded
only when what it depends on changes (issue 21, round five)."""
from __future__ import annotations

import dataclasses
import json

from dockerapi.handlers import containers_json as cj
from dockerapi.handlers import containers_ps as ps
from pkg.docker.engine.model import (
    ContainerSpec,
    EngineContainer,
    EngineRecord,
    EngineState,
    HostConfig,
    NetworkInfo,
    PortBinding,
)
from pkg.model.container import ContainerStatus
from pkg.model.state import ContainerState, DockerState


def _record(cid: str, **changes: object) -> EngineRecord:
    base = EngineRecord(id=cid, name="web", sandbox_id="s" * 64, owns_sandbox=True, image_id="sha256:" + "b" * 64,
                        created=1_700_000_000 * 10**9,
                        config=ContainerSpec(image="busybox", cmd=("sleep", "1 0"), labels={"k": "v\u00e9\"x"},
                                             exposed_ports=("80/tcp", "81/tcp")),
                        host_config=HostConfig(), port_bindings=(PortBinding(80, "tcp", "", 32768),))
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def _view(rec: EngineRecord, state: ContainerState = ContainerState.RUNNING, ip: str = "",
          link_names: tuple[str, ...] = (), **status: int) -> EngineContainer:
    return EngineContainer(rec, ContainerStatus(state, **status),  # type: ignore[arg-type]
                           networks=(NetworkInfo(name="bridge", ip=ip),), link_names=link_names)


def _same(c: EngineContainer, now: float) -> bytes:
    body = ps.summary_bytes(c, now)
    assert body == json.dumps(cj.summary_json(c, now)).encode()
    return body


def test_bytes_are_summary_json_in_every_state() -> None:
    rec = _record("c" * 64)
    exited = _view(rec, ContainerState.EXITED, exit_code=3, started_at=10**9, finished_at=2 * 10**9)
    paused = _view(dataclasses.replace(rec, state=EngineState(extra=DockerState.PAUSED)), started_at=10**9)
    for c in (_view(rec, ContainerState.CREATED), _view(rec, ip="10.1.0.5", started_at=10**9), exited, paused):
        _same(c, now=7200.0)
    body = ps.list_body([_view(rec, ContainerState.CREATED), exited], now=7200.0)
    assert json.loads(body) == [cj.summary_json(_view(rec, ContainerState.CREATED)), cj.summary_json(exited, 7200.0)]
    assert ps.list_body([], now=1.0) == b"[]"


def test_only_the_status_is_encoded_again_while_the_rest_holds() -> None:
    rec = _record("d" * 64)
    running = _view(rec, ip="10.1.0.5", started_at=10**9)
    first = _same(running, now=11.0)
    kept = ps._ENCODED[rec.id]
    assert b'"Status": "Up 10 seconds"' in first
    later = _same(_view(rec, ip="10.1.0.5", started_at=10**9), now=3601.0)  # a new view of the same container
    assert b'"Status": "About an hour"' not in later and b'"Status": "Up About an hour"' in later
    assert ps._ENCODED[rec.id] is kept  # the halves were re-used


def test_each_input_of_the_summary_makes_it_encoded_again() -> None:
    rec = _record("e" * 64)
    _same(_view(rec, ContainerState.CREATED), now=5.0)
    changes = [
        _view(rec, ip="10.1.0.6", started_at=10**9),  # started: state and IP
        _view(rec, ip="10.1.0.7", started_at=10**9),  # another IP
        _view(rec, ip="10.1.0.7", link_names=("/other/alias",), started_at=10**9),  # a link's name
        _view(dataclasses.replace(rec, name="renamed"), ip="10.1.0.7", started_at=10**9),  # a new record
    ]
    for c in changes:
        before = ps._ENCODED[rec.id]
        body = _same(c, now=20.0)
        assert ps._ENCODED[rec.id] is not before
    assert b'"Names": ["/renamed"]' in body
