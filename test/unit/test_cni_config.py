import json
from pathlib import Path

import pytest

from pkg import errors
from pkg.cni import config


def write(path: Path, data: object) -> None:
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)


def test_first_valid_in_lexical_order(tmp_path: Path) -> None:
    write(tmp_path / "20-b.conflist", {"cniVersion": "1.0.0", "name": "b", "plugins": [{"type": "bridge"}]})
    write(tmp_path / "10-a.conflist", "{broken")
    write(tmp_path / "30-c.conf", {"cniVersion": "1.0.0", "name": "c", "type": "ptp"})
    net = config.load_default(tmp_path)
    assert net.name == "b"


def test_single_conf_is_wrapped(tmp_path: Path) -> None:
    write(tmp_path / "10.conf", {"cniVersion": "0.4.0", "name": "single", "type": "bridge"})
    net = config.load_default(tmp_path)
    assert net.plugins[0]["type"] == "bridge" and net.cni_version == "0.4.0"


def test_reasons(tmp_path: Path) -> None:
    with pytest.raises(errors.NotFound):
        config.load_default(tmp_path / "missing")
    with pytest.raises(errors.NotFound):
        config.load_default(tmp_path)
    write(tmp_path / "10.conflist", {"name": "x", "plugins": []})
    with pytest.raises(errors.InvalidArgument, match="no 'plugins'"):
        config.load_default(tmp_path)
