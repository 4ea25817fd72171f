from pathlib import Path

import pytest

from pkg import config
from pkg.errors import InvalidArgument


def test_defaults() -> None:
    cfg = config.build({}, {})
    assert cfg.root == Path("/var/lib/narwhal")
    assert cfg.cri_socket == Path("/run/narwhal/cri.sock")
    assert cfg.docker_socket == Path("/run/narwhal/docker.sock")
    assert cfg.metrics_address == "127.0.0.1:9323"
    assert cfg.owns_containerd
    assert cfg.containerd_socket == Path("/run/narwhal/containerd/containerd.sock")


def test_flags_override_file() -> None:
    cfg = config.build({"root": "/a", "log-level": "debug"}, {"root": "/b", "log-level": None})
    assert cfg.root == Path("/b")
    assert cfg.log_level == "debug"


def test_sockets_follow_state_unless_set() -> None:
    cfg = config.build({"state": "/run/x"}, {})
    assert cfg.cri_socket == Path("/run/x/cri.sock")
    assert cfg.docker_socket == Path("/run/x/docker.sock")
    cfg = config.build({"state": "/run/x", "cri-socket": "/tmp/c.sock"}, {})
    assert cfg.cri_socket == Path("/tmp/c.sock")


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"bogus": 1}, "unknown option 'bogus'"),
        ({"root": "relative/path"}, "root: path must be absolute"),
        ({"root": 5}, "root: expected a path"),
        ({"metrics-address": "nope"}, "metrics-address: expected HOST:PORT"),
        ({"metrics-address": "host.example:80"}, "is not an IP address"),
        ({"metrics-address": "127.0.0.1:99999"}, "expected HOST:PORT"),
        ({"log-level": "loud"}, "log-level: expected one of"),
        ({"registry": {"mirrors": {"docker.io": "http://x"}}}, "registry.mirrors"),
        ({"registry": {"mirrors": {"docker.io": ["ftp://x"]}}}, "must start with http"),
        ({"registry": {"other": 1}}, "unknown key(s) other"),
        ({"stop-containerd-on-exit": "maybe"}, "expected true or false"),
        ({"swarm-etcd-endpoints": ["https://10.0.0.5:2379"]}, "https:// endpoints need swarm-etcd-ca-file"),
        ({"swarm-etcd-endpoints": ["https://10.0.0.5:2379", "10.0.0.6:2379"], "swarm-etcd-ca-file": "/c",
          "swarm-etcd-cert-file": "/a", "swarm-etcd-key-file": "/k"}, "mixing http:// and https://"),
        ({"swarm-etcd-endpoints": ["10.0.0.5:2379"], "swarm-etcd-ca-file": "/c"}, "need https://"),
        ({"swarm-etcd-ca-file": "relative"}, "swarm-etcd-ca-file: path must be absolute"),
    ],
)
def test_bad_values_are_refused(values: dict[str, object], needle: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        config.build(values, {})
    assert needle in err.value.message


def test_swarm_etcd_tls() -> None:
    cfg = config.build({"swarm-etcd-endpoints": "https://10.0.0.5:2379,https://[fd00::1]:2379",
                        "swarm-etcd-ca-file": "/etc/narwhal/etcd/ca.crt", "swarm-etcd-cert-file": "/etc/c.crt",
                        "swarm-etcd-key-file": "/etc/c.key"}, {})
    assert cfg.swarm_etcd_endpoints == ["https://10.0.0.5:2379", "https://[fd00::1]:2379"]
    assert cfg.swarm_etcd_ca_file == Path("/etc/narwhal/etcd/ca.crt") and cfg.swarm_etcd_key_file == Path("/etc/c.key")
    assert config.Config().swarm_etcd_ca_file is None


def test_registry_shape() -> None:
    cfg = config.build(
        {"registry": {"mirrors": {"docker.io": ["http://127.0.0.1:5000"]}, "insecure": ["r.local:5000"]}}, {}
    )
    assert cfg.registry.mirrors == {"docker.io": ["http://127.0.0.1:5000"]}
    assert cfg.registry.insecure == ["r.local:5000"]


def test_cni_bin_dir_colon_list() -> None:
    cfg = config.build({}, {"cni-bin-dir": "/a:/b"})
    assert cfg.cni_bin_dir == [Path("/a"), Path("/b")]


def test_load_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("root: /x\ncri-socket: /y/cri.sock\n")
    assert config.load_file(path) == {"root": "/x", "cri-socket": "/y/cri.sock"}
    path.write_text("- a list\n")
    with pytest.raises(InvalidArgument, match="expected a mapping"):
        config.load_file(path)
    path.write_text("root: [unclosed\n")
    with pytest.raises(InvalidArgument, match="not valid YAML"):
        config.load_file(path)
    with pytest.raises(InvalidArgument, match="No such file"):
        config.load_file(tmp_path / "missing.yaml")


def test_instance_id_differs_per_root() -> None:
    a = config.build({"root": "/var/lib/a"}, {})
    b = config.build({"root": "/var/lib/b"}, {})
    assert a.instance_id != b.instance_id and len(a.instance_id) == 8


def test_runtime_handlers() -> None:
    cfg = config.build({"runtime-handlers": {"fast": "/usr/sbin/runc"}}, {})
    assert cfg.runtime_handlers == {"fast": "/usr/sbin/runc", "runc": "runc"}
    with pytest.raises(InvalidArgument, match="path must be absolute"):
        config.build({"runtime-handlers": {"x": "bin/runc"}}, {})
    with pytest.raises(InvalidArgument, match="expected a mapping"):
        config.build({"runtime-handlers": ["runc"]}, {})
