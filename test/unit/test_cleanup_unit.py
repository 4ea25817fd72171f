"""narwhald cleanup's pure parts: which systemd service a process runs in (a forced cleanup refuses
to stop a narwhald that Restart=always would start again)."""
from __future__ import annotations

import pytest

from narwhal.cleanup import service_in


@pytest.mark.parametrize(("text", "unit"), [
    ("0::/system.slice/narwhald.service\n", "narwhald.service"),
    ("12:pids:/system.slice/narwhald.service\n1:name=systemd:/system.slice/narwhald.service\n", "narwhald.service"),
    ("0::/user.slice/user-0.slice/session-3.scope\n", ""),
    ("9:name=systemd:/\n8:pids:/\n", ""),
    ("12:pids:/system.slice/narwhald.service\n1:name=systemd:/\n", ""),  # only systemd's own hierarchy counts
    ("", ""),
])
def test_service_in(text: str, unit: str) -> None:
    assert service_in(text) == unit
