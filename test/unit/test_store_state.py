import pytest

from pkg import errors
from pkg.model.state import ContainerState, SandboxState, check_container, check_sandbox
from pkg.store import Store


async def test_store_prefix_lookup_and_names() -> None:
    store: Store[str, int] = Store("container")
    store.add("abc123", "meta-a", 0)
    store.add("abd456", "meta-b", 0)
    assert store.resolve("abc") == "abc123"
    with pytest.raises(errors.InvalidArgument, match="ambiguous"):
        store.resolve("ab")
    with pytest.raises(errors.NotFound):
        store.resolve("zzz")
    store.names.reserve("web", "abc123")
    store.names.reserve("web", "abc123")  # same owner: idempotent
    with pytest.raises(errors.AlreadyExists):
        store.names.reserve("web", "abd456")
    store.names.release("web")
    store.names.reserve("web", "abd456")


async def test_update_rolls_back_when_persist_fails() -> None:
    store: Store[str, int] = Store("container")
    store.add("a", "m", 1)

    async def fail(_: int) -> None:
        raise OSError("disk full")

    with pytest.raises(OSError):
        await store.update("a", lambda s: s + 1, fail)
    assert store.get("a")[1] == 1

    async def ok(_: int) -> None:
        return None

    assert await store.update("a", lambda s: s + 1, ok) == 2
    assert store.get("a")[1] == 2


def test_state_machine() -> None:
    check_container(ContainerState.CREATED, ContainerState.RUNNING, "start")
    check_container(ContainerState.RUNNING, ContainerState.EXITED, "exit")
    with pytest.raises(errors.FailedPrecondition, match="container is exited, cannot become running"):
        check_container(ContainerState.EXITED, ContainerState.RUNNING, "start")
    check_sandbox(SandboxState.READY, SandboxState.NOTREADY, "stop")
    with pytest.raises(errors.FailedPrecondition):
        check_sandbox(SandboxState.NOTREADY, SandboxState.READY, "start")
