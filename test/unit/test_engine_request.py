"""Docker create-body pieces the engine keeps as given: log config (moby's ValidateLogOpts), isolation,
supplementary groups, device cgroup rules."""
from __future__ import annotations

import asyncio
from typing import cast

import pytest

from dockerapi.handlers import containers_request as creq
from pkg import errors
from pkg.containerd.client import Client
from pkg.docker.engine.groups import group_ids
from pkg.docker.engine.model import LogConfig
from pkg.images.model import Image
from pkg.runtime.spec_mounts import cgroup_rule, devices
from pkg.runtime.spec_options import Device


def test_log_config_defaults_to_json_file_and_keeps_options() -> None:
    assert creq.log_config(None) == LogConfig("json-file", {})
    assert creq.log_config({"Type": "", "Config": {"max-file": "3"}}) == LogConfig("json-file", {"max-file": "3"})
    assert creq.log_config({"Type": "local", "Config": {"max-size": "1m", "mode": "non-blocking"}}).config == {
        "max-size": "1m", "mode": "non-blocking"}
    assert creq.log_config({"Type": "none", "Config": {"anything": "x"}}).type == "none"


@pytest.mark.parametrize(("raw", "message"), [
    ({"Type": "syslog"}, "logger: no log driver named 'syslog' is registered"),
    ({"Type": "json-file", "Config": {"max-sise": "1m"}}, "unknown log opt 'max-sise' for json-file log driver"),
    ({"Type": "local", "Config": {"tag": "x"}}, "unknown log opt 'tag' for local log driver"),
])
def test_log_config_refused_with_mobys_messages(raw: dict[str, object], message: str) -> None:
    with pytest.raises(errors.InvalidArgument) as refused:
        creq.log_config(raw)
    assert refused.value.message == message


def test_isolation_only_default_on_linux() -> None:
    assert creq.host_config({"Isolation": "default"}).isolation == "default"
    assert creq.host_config({}).isolation == ""
    with pytest.raises(errors.InvalidArgument):
        creq.host_config({"Isolation": "process"})


def test_group_add() -> None:
    assert creq.host_config({"GroupAdd": ["1000", "1001"]}).group_add == ("1000", "1001")
    no_client = cast(Client, None)  # numbers need no look-up in the image
    assert asyncio.run(group_ids(no_client, cast(Image, None), ("1000", "0"))) == [1000, 0]


def test_device_cgroup_rules() -> None:
    assert cgroup_rule("c 7:128 rwm") == {"allow": True, "type": "c", "major": 7, "minor": 128, "access": "rwm"}
    assert cgroup_rule("a *:* m") == {"allow": True, "type": "a", "access": "m"}
    assert devices([Device("", "", cgroup_rule="b 8:* r")]) == ([], [{"allow": True, "type": "b", "major": 8,
                                                                       "access": "r"}])
    for bad in ("c 7 rwm", "x 1:2 r", "c 1:2 rwx", ""):
        with pytest.raises(errors.InvalidArgument):
            creq.host_config({"DeviceCgroupRules": [bad]})
