"""The image-related config keys: max-concurrent-downloads and the registry mirrors/insecure shape."""
import pytest

from pkg import config
from pkg.errors import InvalidArgument


def test_max_concurrent_downloads() -> None:
    assert config.build({}, {}).max_concurrent_downloads == 3
    assert config.build({"max-concurrent-downloads": 5}, {}).max_concurrent_downloads == 5
    assert config.build({}, {"max-concurrent-downloads": "2"}).max_concurrent_downloads == 2


@pytest.mark.parametrize("bad", [0, -1, 65, "x", True, 1.5])
def test_max_concurrent_downloads_refused(bad: object) -> None:
    with pytest.raises(InvalidArgument, match="max-concurrent-downloads"):
        config.build({"max-concurrent-downloads": bad}, {})


def test_registry_shape() -> None:
    cfg = config.build({"registry": {"mirrors": {"docker.io": ["http://127.0.0.1:5000"]},
                                     "insecure": ["myregistry.local:5000"]}}, {})
    assert cfg.registry.mirrors == {"docker.io": ["http://127.0.0.1:5000"]}
    assert cfg.registry.insecure == ["myregistry.local:5000"]
