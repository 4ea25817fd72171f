"""pkg.docker.engine.pods_view: dockershim's names and the guard on kubelet's containers (the integration tests in
test_kubernetes_node.py drive the whole view through the docker CLI)."""
from __future__ import annotations

from typing import Any

import pytest

from pkg import config as config_mod
from pkg import errors
from pkg.docker.engine.pods_view import PodsView, dockershim_name
from pkg.model.container import ContainerConfig, ContainerMetadata
from pkg.model.sandbox import SandboxConfig, SandboxMetadata


def _container(name: str = "web", attempt: int = 2) -> ContainerMetadata:
    return ContainerMetadata(id="c" * 64, sandbox_id="s" * 64, config=ContainerConfig(name=name, image="busybox",
                             attempt=attempt), image_id="sha256:" + "i" * 64, image_ref="busybox", created_at=1)


def test_dockershim_name() -> None:
    sandbox = SandboxMetadata(id="s" * 64, config=SandboxConfig(name="web-7d4b9c", uid="3f2a", namespace="default"),
                              runtime_handler="", created_at=1)
    assert dockershim_name(_container(), sandbox) == "k8s_web_web-7d4b9c_default_3f2a_2"
    assert dockershim_name(_container("sidecar", 0), None) == "k8s_sidecar____0"  # its sandbox is gone


@pytest.mark.parametrize("verb", ["rm", "stop", "kill", "rename", "update", "commit", "pause", "restart"])
def test_guard_refuses_every_verb_by_default(verb: str) -> None:
    view = PodsView(Any, Any)  # type: ignore[arg-type]  # the guard reads no store
    with pytest.raises(errors.Conflict, match=f"container cccccccccccc is managed by kubelet .*: {verb} it"):
        view.guard("c" * 64, verb)


@pytest.mark.parametrize(("verb", "allowed"), [("rm", True), ("stop", True), ("kill", True), ("rename", False),
                                                ("update", False), ("commit", False), ("pause", False)])
def test_may_stop_allows_only_stop_kill_rm(verb: str, allowed: bool) -> None:
    view = PodsView(Any, Any, may_stop=True)  # type: ignore[arg-type]
    if allowed:
        view.guard("c" * 64, verb)
    else:
        with pytest.raises(errors.Conflict):
            view.guard("c" * 64, verb)


def test_switches_are_config_keys_off_by_default() -> None:
    defaults = config_mod.Config()
    assert not (defaults.docker_shows_pods or defaults.docker_may_stop_pods or defaults.docker_images_for_pods)
    cfg = config_mod.build({"docker-shows-pods": True, "docker-images-for-pods": "yes"}, {})
    assert cfg.docker_shows_pods and cfg.docker_images_for_pods and not cfg.docker_may_stop_pods
    with pytest.raises(errors.InvalidArgument, match="docker-may-stop-pods: expected true or false"):
        config_mod.build({"docker-may-stop-pods": "sometimes"}, {})
