"""docker commit's ``changes`` (Dockerfile instructions) and body Config applied to an image config."""
from __future__ import annotations

import pytest

from dockerapi.handlers.images_commit import apply_body, apply_changes
from pkg import errors
from pkg.images.model import ImageConfig

BASE = ImageConfig(cmd=["sh"], env=["PATH=/bin", "A=1"], working_dir="/", labels={"x": "1"})


def test_each_instruction() -> None:
    cfg = apply_changes(BASE, [
        'CMD ["cat", "/greeting"]', "ENV A=2 B=\"two words\"", "ENV LEGACY some value", "LABEL y=2 z=3",
        "EXPOSE 80 53/udp", "WORKDIR /srv", "USER nobody", 'VOLUME ["/data"]', "VOLUME /logs /tmp/x",
        "STOPSIGNAL SIGINT", "# a comment", "",
    ])
    assert cfg.cmd == ["cat", "/greeting"]
    assert cfg.env == ["PATH=/bin", "A=2", "B=two words", "LEGACY=some value"]
    assert cfg.labels == {"x": "1", "y": "2", "z": "3"}
    assert cfg.exposed_ports == ["53/udp", "80/tcp"]
    assert (cfg.working_dir, cfg.user, cfg.stop_signal) == ("/srv", "nobody", "SIGINT")
    assert cfg.volumes == ["/data", "/logs", "/tmp/x"]


def test_shell_forms_and_entrypoint_resets_cmd() -> None:
    cfg = apply_changes(BASE, ["cmd echo hi"])
    assert cfg.cmd == ["/bin/sh", "-c", "echo hi"]
    cfg = apply_changes(BASE, ["ENTRYPOINT top -b"])
    assert cfg.entrypoint == ["/bin/sh", "-c", "top -b"] and cfg.cmd == []


@pytest.mark.parametrize("change", ["RUN echo nope", "FROM busybox", "CMD", "ENV =x", "LABEL"])
def test_refused_changes(change: str) -> None:
    with pytest.raises(errors.InvalidArgument):
        apply_changes(BASE, [change])


def test_body_config_overrides() -> None:
    cfg = apply_body(BASE, {"Cmd": ["true"], "Env": ["Z=9"], "Labels": {"k": "v"}, "ExposedPorts": {"22/tcp": {}},
                            "WorkingDir": "", "Hostname": "ignored"})
    assert cfg.cmd == ["true"] and cfg.env == ["Z=9"]
    assert cfg.labels == {"x": "1", "k": "v"} and cfg.exposed_ports == ["22/tcp"]
    assert cfg.working_dir == "/"  # empty means unset, not cleared
    with pytest.raises(errors.InvalidArgument):
        apply_body(BASE, {"Cmd": [1, 2]})
