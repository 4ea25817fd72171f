"""critest "Runtime info" (cri-tools pkg/validate/runtime_info.go), ported."""
from __future__ import annotations

from cri_api.v1 import api_pb2
from lib.critest import Crit, crit_daemon_fixture, crit_fixture  # noqa: F401


def test_runtime_should_return_version_info(crit: Crit) -> None:
    """critest: runtime should return version info [Conformance]."""
    version = crit.rs.Version(api_pb2.VersionRequest(version="0.1.0"), timeout=10)
    assert version.version and version.runtime_name and version.runtime_version and version.runtime_api_version


def test_runtime_should_return_runtime_conditions(crit: Crit) -> None:
    """critest: runtime should return runtime conditions [Conformance] (RuntimeReady and NetworkReady true)."""
    status = crit.rs.Status(api_pb2.StatusRequest(verbose=False), timeout=10).status
    ready = {c.type for c in status.conditions if c.status and c.type in ("RuntimeReady", "NetworkReady")}
    assert ready == {"RuntimeReady", "NetworkReady"}
