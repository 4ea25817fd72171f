"""pkg.containerd.shim_start: the socket a runc v2 shim binds for a group (containerd's SocketAddress), the
daemon command line reap matches, and the ``shim-prestart`` key."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from pkg import config
from pkg.containerd import shim_start
from pkg.errors import InvalidArgument


def test_socket_is_containerd_s_hash_of_address_namespace_group() -> None:
    spot = shim_start.ShimSpot("/run/nw/containerd.sock", "narwhal", "abc", "/tmp/x")
    digest = hashlib.sha256(b"/run/nw/containerd.sock/narwhal/abc").hexdigest()
    assert spot.socket == Path("/run/containerd/s") / digest
    # filepath.Join cleans the path: a trailing slash or a doubled one names the same shim.
    assert shim_start.ShimSpot("/run/nw//containerd.sock/", "narwhal", "abc", "/tmp/x").socket == spot.socket


def test_daemon_argv_is_the_managers_new_command() -> None:
    spot = shim_start.ShimSpot("/run/nw/containerd.sock", "narwhal", "g", "/tmp/x")
    assert spot.daemon_argv("/usr/bin/containerd-shim-runc-v2") == [
        b"/usr/bin/containerd-shim-runc-v2", b"-namespace", b"narwhal", b"-id", b"g", b"-address",
        b"/run/nw/containerd.sock"]


def test_prepared_dir_names_the_group_and_is_loadable(tmp_path: Path) -> None:
    spot = shim_start.ShimSpot("/run/nw/containerd.sock", "narwhal", "g", str(tmp_path / "g"))
    shim_start._prepare_dir(spot, "/usr/bin/containerd-shim-runc-v2")
    spec = json.loads((tmp_path / "g" / "config.json").read_text())
    assert spec["annotations"] == {shim_start.GROUP_ANNOTATION: "g"}  # what the shim's start groups by
    assert (tmp_path / "g" / "log").resolve() == Path("/dev/null")  # nobody needs to drain the shim's stderr
    assert shim_start.load(tmp_path / "g") == (spot, "/usr/bin/containerd-shim-runc-v2")
    assert shim_start.load(tmp_path / "missing") is None
    assert not shim_start.reap(tmp_path / "g")  # no such shim runs: only the directory goes
    assert not (tmp_path / "g").exists()


def test_config_key() -> None:
    assert config.build({}, {}).shim_prestart is True
    assert config.build({"shim-prestart": False}, {}).shim_prestart is False
    with pytest.raises(InvalidArgument, match="shim-prestart"):
        config.build({"shim-prestart": "maybe"}, {})
