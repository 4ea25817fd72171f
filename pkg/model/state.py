"""The one state machine of sandboxes and containers, shared by CRI and the Docker facade.

Containers::

    (create) ──> CREATED ──start──> RUNNING ──exit──> EXITED ──remove──> (gone)
                    │                                    ^
                    └──────────── start failed ──────────┘
    UNKNOWN: recovered from containerd but the task state could not be read;
             it may be stopped (→ EXITED) or removed.

Sandboxes::

    (run) ──> READY ──stop──> NOTREADY ──remove──> (gone)
              READY ──infra exit──> NOTREADY
    UNKNOWN: recovered but not yet reconciled; stop/remove still work.

A transition not in the table raises FailedPrecondition with the states named,
never an untyped error.
"""
from __future__ import annotations

import enum

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


_CONTAINER: dict[ContainerState, set[ContainerState]] = {
    ContainerState.CREATED: {ContainerState.RUNNING, ContainerState.EXITED},
    ContainerState.RUNNING: {ContainerState.EXITED, ContainerState.UNKNOWN},
    ContainerState.EXITED: set(),
    ContainerState.UNKNOWN: {ContainerState.RUNNING, ContainerState.EXITED},
}

_SANDBOX: dict[SandboxState, set[SandboxState]] = {
    SandboxState.READY: {SandboxState.NOTREADY, SandboxState.UNKNOWN},
    SandboxState.NOTREADY: set(),
    SandboxState.UNKNOWN: {SandboxState.READY, SandboxState.NOTREADY},
}


def check_container(current: ContainerState, new: ContainerState, what: str) -> None:
    if new != current and new not in _CONTAINER[current]:
        raise errors.FailedPrecondition(f"{what}: container is {current.value}, cannot become {new.value}")


def check_sandbox(current: SandboxState, new: SandboxState, what: str) -> None:
    if new != current and new not in _SANDBOX[current]:
        raise errors.FailedPrecondition(f"{what}: sandbox is {current.value}, cannot become {new.value}")
