"""A pod's hostname comes from one function, and critest's long pod names never reach the UTS name.

critest names its pods ``create-PodSandbox-for-container-<uuid>`` (68 bytes) and leaves
``PodSandboxConfig.hostname`` empty; the kernel allows 64 bytes. containerd's CRI then uses the node's
hostname, and so must every place narwhald writes one: the infra spec, /etc/hostname, /etc/hosts and
HOSTNAME in a container's environment.
"""
from __future__ import annotations

import socket
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pkg.errors import InvalidArgument
from pkg.model.sandbox import NamespaceMode, NamespaceOptions, SandboxConfig, SandboxMetadata
from pkg.runtime import infra, sandboxes
from pkg.runtime.container_spec import sandbox_hostname

CRITEST_NAME = "create-PodSandbox-for-container-" + str(uuid.uuid4())


def _config(**kwargs: Any) -> SandboxConfig:
    kwargs.setdefault("name", CRITEST_NAME)
    return SandboxConfig(uid="uid-1", namespace="ns", **kwargs)


def test_critest_names_are_longer_than_the_kernel_allows() -> None:
    assert len(CRITEST_NAME.encode()) > 64


def test_empty_hostname_is_the_nodes() -> None:
    assert sandbox_hostname(_config()) == socket.gethostname()


def test_explicit_hostname_wins() -> None:
    assert sandbox_hostname(_config(hostname="test-hostname")) == "test-hostname"


def test_host_network_pod_has_the_nodes_name() -> None:
    host = NamespaceOptions(network=NamespaceMode.NODE)
    assert sandbox_hostname(_config(hostname="ignored", namespace_options=host)) == socket.gethostname()


def test_an_overlong_explicit_hostname_is_refused_before_anything_is_made() -> None:
    with pytest.raises(InvalidArgument, match="64 bytes"):
        sandboxes._validate(_config(hostname="h" * 65))
    sandboxes._validate(_config(hostname="h" * 64))


def test_pod_files_use_the_derived_hostname(tmp_path: Path) -> None:
    sandboxes._write_pod_files(tmp_path, _config(), "10.88.0.7", [])
    node = socket.gethostname()
    assert (tmp_path / "hostname").read_text() == node + "\n"
    assert f"10.88.0.7\t{node}" in (tmp_path / "hosts").read_text()
    assert CRITEST_NAME not in (tmp_path / "hosts").read_text()


def test_infra_spec_of_a_critest_pod(tmp_path: Path) -> None:
    """The spec that failed RunPodSandbox with 'invalid hostname ... at most 64 bytes'."""
    ctx: Any = SimpleNamespace(cfg=SimpleNamespace(root=tmp_path), sandbox_state=lambda sid: tmp_path / "state" / sid,
                               shim_group=lambda sid: {})
    metadata = SandboxMetadata(id="s" * 64, config=_config(), runtime_handler="runc", created_at=0,
                               netns_path="/run/netns/x", ipc_path=str(tmp_path / "ipc"),
                               uts_path=str(tmp_path / "uts"), infra=True, sandbox_dir=str(tmp_path))
    if not infra.CATATONIT.exists():
        pytest.skip(f"{infra.CATATONIT} is missing (Debian package catatonit)")
    spec = infra.sandbox_spec(ctx, metadata)
    assert spec["hostname"] == socket.gethostname()
