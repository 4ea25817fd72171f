"""log-service: its config key, the registration format and the keys that name registration files."""
from __future__ import annotations

import pytest

from pkg import config
from pkg.errors import InvalidArgument
from pkg.logs.service import StreamSpec, valid_key


def test_config_key() -> None:
    assert config.build({}, {}).log_service is True
    assert config.build({"log-service": False}, {}).log_service is False
    assert config.build({"log-service": True}, {}).log_service is True
    assert config.build({}, {"log-service": "true"}).log_service is True
    with pytest.raises(InvalidArgument, match="log-service"):
        config.build({"log-service": "sometimes"}, {})
    assert config.build({}, {"state": "/tmp/x"}).log_service_dir.as_posix() == "/tmp/x/logs"


def test_registration_round_trip() -> None:
    spec = StreamSpec(path="/var/log/pods/p/c/0.log", stdout="/run/s/stdout", stderr="", max_line=100,
                      stats="/run/s/logger.pid.stats", max_size=10_000, max_files=3, compress=True)
    assert StreamSpec.load(spec.dump()) == spec
    assert StreamSpec.load('{"path": "/l", "stdout": "/o"}') == StreamSpec(path="/l", stdout="/o")


@pytest.mark.parametrize("key", ["", ".hidden", "../x", "a/b", "a b", "x" * 201, "é"])
def test_bad_keys(key: str) -> None:
    assert not valid_key(key)


def test_good_keys() -> None:
    assert valid_key("cri-" + "a" * 64) and valid_key("docker-0123abcd")
