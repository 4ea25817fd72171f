"""The packaging sources (packaging/): the conffile documents every option and its defaults are the
daemon's; the unit is containerd's kind of unit; the maintainer scripts are valid sh."""
from __future__ import annotations

import configparser
import dataclasses
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from pkg import config as config_mod

PACKAGING = Path(__file__).resolve().parents[2] / "packaging"
CONFFILE = PACKAGING / "narwhald.yaml"
# Keys whose commented line is an example rather than the default (the default is "unset").
EXAMPLES = {"containerd-address", "pod-subnet", "cni-bridge"}


def uncommented() -> str:
    """The conffile with every option line (``#key: value`` and its ``#  nested`` lines) switched on."""
    lines = []
    for line in CONFFILE.read_text().splitlines():
        if re.match(r"#[a-z]|#  ", line):
            lines.append(line[1:])
    return "\n".join(lines) + "\n"


def test_conffile_names_every_option_once() -> None:
    keys = [line[1:].split(":")[0] for line in CONFFILE.read_text().splitlines() if re.match(r"#[a-z]", line)]
    assert sorted(keys) == sorted(config_mod.CONVERTERS)
    assert yaml.safe_load(CONFFILE.read_text()) is None  # everything is commented: the defaults apply


def test_conffile_defaults_are_the_daemons() -> None:
    values = yaml.safe_load(uncommented())
    cfg = config_mod.build(values, {})  # every line is valid as written
    defaults = config_mod.Config()
    for key in config_mod.CONVERTERS:
        if key in EXAMPLES:
            continue
        name = key.replace("-", "_")
        assert getattr(cfg, name) == getattr(defaults, name), key
    assert dataclasses.replace(cfg, containerd_address=None, pod_subnet=[], cni_bridge="") == defaults


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(PACKAGING / "systemd" / "narwhald.service")
    return parser


def test_service_is_containerds_kind_of_unit() -> None:
    service = unit()["Service"]
    assert {k: service[k] for k in ("Type", "Delegate", "KillMode", "Restart", "LimitNOFILE", "LimitNPROC",
                                     "LimitCORE", "TasksMax", "OOMScoreAdjust")} == {
        "Type": "notify", "Delegate": "yes", "KillMode": "process", "Restart": "always", "LimitNOFILE": "infinity",
        "LimitNPROC": "infinity", "LimitCORE": "infinity", "TasksMax": "infinity", "OOMScoreAdjust": "-999"}
    assert service["ExecStart"] == "/usr/bin/narwhald --config /etc/narwhal/narwhald.yaml"
    assert "network-online.target" in unit()["Unit"]["After"].split()
    assert unit()["Install"]["WantedBy"] == "multi-user.target"


@pytest.mark.parametrize("script", ["postinst", "prerm", "postrm"])
def test_maintainer_scripts_are_valid_sh(script: str) -> None:
    path = PACKAGING / "debian" / script
    assert path.stat().st_mode & 0o111
    assert subprocess.run(["sh", "-n", str(path)], capture_output=True).returncode == 0
