"""pods-per-shim: which runc v2 shim group a pod's specs name (pkg.runtime.shim_groups) and its config key."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pkg import config
from pkg.errors import InvalidArgument
from pkg.runtime.context import RuntimeContext
from pkg.runtime.shim_groups import GROUP_ANNOTATION, ShimGroups


def test_one_pod_per_shim_adds_no_annotation() -> None:
    groups = ShimGroups()
    assert groups.annotations("a", 1) == {}
    assert groups.group_of("a") is None


def test_pods_fill_the_lowest_group_with_room() -> None:
    groups = ShimGroups()
    names = [groups.annotations(sid, 2)[GROUP_ANNOTATION] for sid in "abcde"]
    assert names == ["narwhal-shim-0", "narwhal-shim-0", "narwhal-shim-1", "narwhal-shim-1", "narwhal-shim-2"]
    assert groups.assign("a", 2) == "narwhal-shim-0"  # a pod keeps its group for all its containers
    groups.release("b")
    assert groups.assign("f", 2) == "narwhal-shim-0"  # the freed place is taken first
    assert groups.release("c") is None
    assert groups.release("d") == "narwhal-shim-1"  # emptied: retiring while its idle shim is reaped
    assert groups.assign("g", 2) == "narwhal-shim-2"  # group 1 is gone; 2 has room
    assert groups.assign("h", 2) == "narwhal-shim-3"  # a retiring group is never handed out
    assert groups.assign("i", 2) == "narwhal-shim-3"
    groups.retired("narwhal-shim-1")
    assert groups.assign("j", 2) == "narwhal-shim-1"  # the lowest free number is reused once retired
    assert groups.release("missing") is None  # idempotent


def test_adopt_rebuilds_membership_after_a_restart() -> None:
    groups = ShimGroups()
    spec = {"annotations": {GROUP_ANNOTATION: "narwhal-shim-3", "io.kubernetes.cri.sandbox-id": "a"}}
    groups.adopt("a", spec)
    groups.adopt("a", spec)  # a second container of the same pod
    groups.adopt("b", {"annotations": {"io.kubernetes.cri.sandbox-id": "b"}})  # a pod not grouped
    groups.adopt("c", {"annotations": {GROUP_ANNOTATION: "someone-else"}})  # not ours
    groups.adopt("d", {})
    assert groups.group_of("a") == "narwhal-shim-3"
    assert groups.group_of("b") is None and groups.group_of("c") is None
    assert groups.assign("e", 2) == "narwhal-shim-3"
    assert groups.assign("f", 2) == "narwhal-shim-0"
    # Grouping turned off (SIGHUP or a restart with pods-per-shim 1): grouped pods keep their shim.
    assert groups.annotations("a", 1) == {GROUP_ANNOTATION: "narwhal-shim-3"}
    assert groups.annotations("b", 1) == {}


def test_config_key() -> None:
    assert config.build({}, {}).pods_per_shim == 10
    assert config.build({"pods-per-shim": 1}, {}).pods_per_shim == 1
    assert config.build({"pods-per-shim": 8}, {}).pods_per_shim == 8
    assert config.build({}, {"pods-per-shim": "4"}).pods_per_shim == 4
    for bad in (0, 65, -1, "x", True, 1.5):
        with pytest.raises(InvalidArgument, match="pods-per-shim"):
            config.build({"pods-per-shim": bad}, {})


def test_only_the_cri_domain_groups_pods(tmp_path: Path) -> None:
    cfg = config.Config(root=tmp_path, pods_per_shim=4)
    nothing: Any = None
    cri = RuntimeContext(cfg=cfg, client=nothing, network=nothing, netns_create=nothing, netns_remove=nothing,
                         images=nothing)
    docker = RuntimeContext(cfg=cfg, client=nothing, network=nothing, netns_create=nothing, netns_remove=nothing,
                            images=nothing, domain="docker")
    assert cri.shim_group("a") == {GROUP_ANNOTATION: "narwhal-shim-0"}
    assert docker.shim_group("a") == {}  # a Docker container keeps a shim of its own, as under dockerd
