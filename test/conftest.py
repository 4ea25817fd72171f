"""Shared fixtures: a real narwhald (with its own containerd), a local registry, test images.

Integration tests need root and the packages from ``make setup``; they are
skipped with a reason otherwise.  Every daemon gets short private dirs under
/tmp (unix socket paths are limited to 108 bytes) and is torn down with its
containerd, so tests never touch each other's objects.
"""
from __future__ import annotations

import asyncio
import inspect
import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "hack"))
sys.path.insert(0, str(ROOT / "test"))

from lib.cni_host import InstanceNetwork  # noqa: E402
from lib.daemon import DaemonFactory, DaemonProcess, start_daemon  # noqa: E402
from lib.leaks import host_leftovers  # noqa: E402
from lib.loopguard import LoopGuard, leaked_tasks  # noqa: E402
from lib.registry import Registry, start_registry  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "loop_guard_off: the test may block its event loop or leave tasks "
                            "(say why next to it)")


@pytest.fixture(autouse=True)
def _loop_guard(request: pytest.FixtureRequest) -> Iterator[None]:
    """A unit test fails when a callback holds an event loop of the test process > 100 ms; every test fails
    when it leaves an asyncio task pending (an async test, or a test's own asyncio.run()): lib.loopguard."""
    if request.node.get_closest_marker("loop_guard_off"):
        yield
        return
    guard = LoopGuard()
    with guard.installed():
        if inspect.iscoroutinefunction(getattr(request, "function", None)):
            request.getfixturevalue("_no_leaked_tasks")
        yield
    if guard.leaked:
        pytest.fail("asyncio.run() left tasks pending: " + ", ".join(guard.leaked), pytrace=False)
    # Integration tests drive real daemons with blocking helpers (subprocess, iptables, sockets) straight from
    # their coroutines, which only the test waits on: their blocks are not counted (leaks are).
    if guard.blocked and "/integration/" not in str(request.node.path):
        worst = sorted(guard.blocked, reverse=True)[:3]
        pytest.fail("the event loop was blocked: " + "; ".join(f"{held * 1000:.0f} ms in {what}"
                                                                for held, what in worst), pytrace=False)


@pytest.fixture
async def _no_leaked_tasks() -> AsyncIterator[None]:
    before = asyncio.all_tasks()
    yield
    leaked = await leaked_tasks(before)
    if leaked:
        names = ", ".join(f"{t.get_name()} {t.get_coro()!r}"[:200] for t in leaked)
        pytest.fail(f"asyncio tasks left pending: {names}", pytrace=False)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "/integration/" in str(item.path):
            item.add_marker(pytest.mark.integration)
            if os.geteuid() != 0:
                item.add_marker(pytest.mark.skip(reason="integration tests need root"))


@pytest.fixture
def daemon_factory() -> Iterator[DaemonFactory]:
    """Start narwhald instances; all are stopped (with their containerd) at teardown."""
    started: list[DaemonProcess] = []

    def factory(**kwargs: Any) -> DaemonProcess:
        d = start_daemon(**kwargs)
        started.append(d)
        return d

    yield factory
    left = {}
    for d in reversed(started):
        network = InstanceNetwork.of(d.root, d.base / "net.d")  # read before destroy() removes the dirs
        d.destroy()  # runs `narwhald cleanup`: nothing of the instance may be left on the host after it
        bridges = tuple(network.docker_networks.bridges) if network.docker_networks else ()
        left.update({f"{d.base} {kind}": found for kind, found in host_leftovers(d, bridges).items()})
        network.remove()  # the instance's bridge and iptables state are host-global
    assert left == {}


@pytest.fixture
def daemon(daemon_factory: DaemonFactory) -> DaemonProcess:
    return daemon_factory()


@pytest.fixture(scope="session")
def registry() -> Iterator[Registry]:
    reg = start_registry()
    yield reg
    reg.stop()
