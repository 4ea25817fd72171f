"""narwhal.daemon.docker_state: the Docker face is loaded at start only when the Docker domain has something to
bring back (issue 21: otherwise at the first Docker client); what the face itself writes on a first use (the
predefined networks, an empty overlay-links record, empty dirs) does not count."""
from __future__ import annotations

import json
from pathlib import Path

from narwhal.daemon import docker_state
from pkg import config
from pkg.docker.networks.model import PREDEFINED, predefined_id


def test_nothing_to_bring_back_after_a_first_use(tmp_path: Path) -> None:
    cfg = config.build({"root": str(tmp_path / "root"), "state": str(tmp_path / "state")}, {})
    assert docker_state(cfg, recovered=False) == ""
    docker = cfg.root / "docker"
    for name in PREDEFINED:
        (docker / "networks").mkdir(parents=True, exist_ok=True)
        (docker / "networks" / f"{predefined_id(name, cfg.instance_id)}.json").write_text("{}")
    for empty in ("engine", "volumes", "build", "execs"):
        (docker / empty).mkdir()
    links = cfg.state / "docker" / "swarm" / "overlay-links.json"
    links.parent.mkdir(parents=True)
    links.write_text("[]")
    assert docker_state(cfg, recovered=False) == ""


def test_each_kind_of_state_loads_the_face_at_start(tmp_path: Path) -> None:
    cfg = config.build({"root": str(tmp_path / "root"), "state": str(tmp_path / "state")}, {})
    docker = cfg.root / "docker"
    assert docker_state(cfg, recovered=True) == "Docker containers in containerd"
    cases = [
        (docker / "engine" / "0123abcd" / "record.json", "{}", "Docker container records"),
        (docker / "networks" / "f00d.json", "{}", "user-defined networks"),
        (docker / "volumes" / "data" / "record.json", "{}", "volumes"),
        (docker / "swarm" / "node.json", "{}", "swarm"),
        (cfg.state / "docker" / "swarm" / "overlay-links.json", json.dumps(["nw-vx-1"]), "swarm"),
    ]
    for path, text, reason in cases:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        assert docker_state(cfg, recovered=False) == reason
        path.unlink()
        path.parent.rmdir()
    shows = config.build({"root": str(cfg.root), "state": str(cfg.state), "docker-shows-pods": True}, {})
    assert docker_state(shows, recovered=False) == "docker-shows-pods"
