"""Shared fixtures: a real narwhald (with its own containerd), a local registry, test images.

Integration tests need root and the packages from ``make setup``; they are
skipped with a reason otherwise.  Every daemon gets short private dirs under
/tmp (unix socket paths are limited to 108 bytes) and is torn down with its
containerd, so tests never touch each other's objects.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "hack"))
sys.path.insert(0, str(ROOT / "test"))

from lib.cni_host import InstanceNetwork  # noqa: E402
from lib.daemon import DaemonFactory, DaemonProcess, start_daemon  # noqa: E402
from lib.leaks import host_leftovers  # noqa: E402
from lib.registry import Registry, start_registry  # noqa: E402


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
