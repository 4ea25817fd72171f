"""The one state machine of sandboxes and containers, shared by CRI and the Docker facade.

Containers (the core, both domains)::

    (create) ──> CREATED ──start──> RUNNING ──exit──> EXITED ──remove──> (gone)
                    │                  ^                 │
                    └── start failed ──┼────────────────>┤
                                       └── start again ──┘  (Docker only: a new task on the same rootfs)
    UNKNOWN: recovered from containerd with a task the CREATED checkpoint does not know of (narwhald died
             between task start and the RUNNING checkpoint);
             it may be stopped (→ EXITED), found running (→ RUNNING) or removed.

Sandboxes::

    (run) ──> READY ──stop──> NOTREADY ──remove──> (gone)
              READY ──infra exit──> NOTREADY
    UNKNOWN: recovered but not yet reconciled; stop/remove still work.

Docker containers (moby's ``State.Status``): the core's state plus what only Docker has. The engine record
keeps just the Docker-only part (``DOCKER_ONLY``: paused, restarting, removing); ``docker_state`` reads the
whole state from it and the core's, and ``docker_extra`` (through the engine's ``Registry.transition``) is
the one way to change that part::

    running ─pause─> paused ─unpause─> running            (core: running)
    exited ─restart policy─> restarting ─backoff over, or stopped─> exited, then the core starts it
    any ─remove─> removing          dead: the core lost track of the task (UNKNOWN)
    created -> running, running/paused -> exited: the core's moves, seen through docker_state

Every write of a state goes through ``transition`` (or ``docker_extra``) under the object's status
lock (``Store.update`` / the engine registry's record lock). A change that is not in ``TRANSITIONS`` is a
bug in the caller: it raises ``IllegalTransition``. Checks of a client's request (start of an exited CRI
container) are made before, with ``check_container``/``check_sandbox``, as ``FailedPrecondition``.
"""
from __future__ import annotations

import dataclasses
import enum
from typing import Any, Protocol, TypeVar

from pkg import errors


class ContainerState(enum.Enum):
    CREATED = "created"
    RUNNING = "running"
    EXITED = "exited"
    UNKNOWN = "unknown"


class SandboxState(enum.Enum):
    READY = "ready"
    NOTREADY = "notready"
    UNKNOWN = "unknown"


class DockerState(enum.Enum):
    """moby's State.Status."""

    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    RESTARTING = "restarting"
    REMOVING = "removing"
    EXITED = "exited"
    DEAD = "dead"


State = ContainerState | SandboxState | DockerState

_C, _S, _D = ContainerState, SandboxState, DockerState

# The one table: from each state, the states it may become. Staying in a state (facts only) is always allowed.
TRANSITIONS: dict[State, frozenset[State]] = {
    _C.CREATED: frozenset({_C.RUNNING, _C.EXITED, _C.UNKNOWN}),  # start; start failed; recovery found a task
    _C.RUNNING: frozenset({_C.EXITED, _C.UNKNOWN}),  # exit (a lost task: EXITED 255); UNKNOWN: no writer today
    _C.EXITED: frozenset({_C.RUNNING}),  # Docker's start of a stopped container (CRI refuses it before)
    _C.UNKNOWN: frozenset({_C.RUNNING, _C.EXITED}),  # reconcile: task found running / stopped or gone
    _S.READY: frozenset({_S.NOTREADY, _S.UNKNOWN}),  # stop, infra exit, reconcile; UNKNOWN: no writer today
    _S.NOTREADY: frozenset(),
    _S.UNKNOWN: frozenset({_S.READY, _S.NOTREADY}),
    # Docker: the moves of the Docker-only part, the core's state unchanged (pause, the restart policy's
    # backoff, removal); the core's own moves (start, exit) show through docker_state.
    _D.CREATED: frozenset({_D.REMOVING}),
    _D.RUNNING: frozenset({_D.PAUSED, _D.REMOVING}),
    _D.PAUSED: frozenset({_D.RUNNING, _D.REMOVING}),
    _D.RESTARTING: frozenset({_D.EXITED, _D.DEAD, _D.REMOVING}),  # stopped or started during the backoff
    _D.EXITED: frozenset({_D.RESTARTING, _D.REMOVING}),
    _D.DEAD: frozenset({_D.RESTARTING, _D.REMOVING}),
    _D.REMOVING: frozenset(),  # the end: the record goes
}

DOCKER_ONLY = frozenset({_D.PAUSED, _D.RESTARTING, _D.REMOVING})


class IllegalTransition(errors.FailedPrecondition):
    """A state change the table does not have: a bug in the caller, never a client's mistake."""


def allowed(current: State, new: State) -> bool:
    return new == current or new in TRANSITIONS[current]


def check(current: State, new: State, what: str) -> None:
    if type(new) is not type(current) or not allowed(current, new):
        raise IllegalTransition(f"{what}: {_kind(current)} is {current.value}, cannot become {new.value}")


class _Stateful(Protocol):
    @property
    def state(self) -> Any: ...


T = TypeVar("T", bound=_Stateful)


def transition(obj: T, to: State, what: str = "", **facts: Any) -> T:
    """``obj`` (a frozen status) in state ``to`` with ``facts`` changed; IllegalTransition if ``to`` may not
    follow its state. Called inside ``Store.update``'s function, so under the object's status lock."""
    check(obj.state, to, what or type(obj).__name__)
    return dataclasses.replace(obj, state=to, **facts)  # type: ignore[type-var]


def docker_state(core: ContainerState, extra: DockerState | None) -> DockerState:
    """The whole Docker state from the core's and the Docker-only part (None: the core's says it)."""
    if extra == _D.REMOVING:
        return _D.REMOVING
    if core == _C.RUNNING:
        return _D.PAUSED if extra == _D.PAUSED else _D.RUNNING
    if extra == _D.RESTARTING:
        return _D.RESTARTING
    if core == _C.CREATED:
        return _D.CREATED
    if core == _C.UNKNOWN:
        return _D.DEAD
    return _D.EXITED


def docker_extra(core: ContainerState, extra: DockerState | None, to: DockerState | None, what: str) -> \
        DockerState | None:
    """The Docker-only part after moving to ``to`` (None: to what the core's state says alone, dropping a
    paused or restarting the core has made moot), checked against the table and against the core's state."""
    current = docker_state(core, extra)
    if to is None:
        if extra == _D.REMOVING:
            return extra
        to = docker_state(core, None)
    check(current, to, what)
    new = to if to in DOCKER_ONLY else None
    if docker_state(core, new) != to:
        raise IllegalTransition(f"{what}: the container's task is {core.value}, it cannot be {to.value}")
    return new


def check_container(current: ContainerState, new: ContainerState, what: str) -> None:
    """A client's request that would move ``current`` to ``new``: FailedPrecondition unless CRI allows it
    (CRI never starts an exited container again)."""
    if new != current and (new not in TRANSITIONS[current] or current == _C.EXITED):
        raise errors.FailedPrecondition(f"{what}: container is {current.value}, cannot become {new.value}")


def check_sandbox(current: SandboxState, new: SandboxState, what: str) -> None:
    if not allowed(current, new):
        raise errors.FailedPrecondition(f"{what}: sandbox is {current.value}, cannot become {new.value}")


def _kind(state: State) -> str:
    return {ContainerState: "container", SandboxState: "sandbox", DockerState: "Docker container"}[type(state)]
