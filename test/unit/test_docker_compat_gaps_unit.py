"""Pure pieces of issue 13's compat gaps: IPv6/auxiliary pools and their host-local ranges, log rotation
options and the logger's rotation, --volumes-from parsing, endpoint settings from request bodies."""
from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from dockerapi.handlers.containers_request import container_spec, mac_address
from pkg import errors
from pkg.docker.engine import mounts, translate
from pkg.docker.engine.model import LogConfig
from pkg.docker.networks import conflist
from pkg.docker.networks.model import IPAMPool
from pkg.docker.volumes.model import MountPoint, MountSpec, MountType
from pkg.logs.writer import LogWriter, Stream
from pkg.model.container import LogRotation


def test_ipv6_pools_and_auxiliary_addresses() -> None:
    v6 = conflist.complete_pool(IPAMPool("2001:389::/64", ip_range="2001:389::/96"))
    assert v6.gateway == "2001:389::1"
    aux = conflist.complete_pool(IPAMPool("10.9.0.0/29", aux={"a": "10.9.0.2", "b": "10.9.0.5"}))
    assert aux.aux == {"a": "10.9.0.2", "b": "10.9.0.5"}
    # host-local never hands out an auxiliary address: the range is cut around them.
    assert conflist._ranges(aux) == [
        {"subnet": "10.9.0.0/29", "gateway": "10.9.0.1", "rangeStart": "10.9.0.1", "rangeEnd": "10.9.0.1"},
        {"subnet": "10.9.0.0/29", "gateway": "10.9.0.1", "rangeStart": "10.9.0.3", "rangeEnd": "10.9.0.4"},
        {"subnet": "10.9.0.0/29", "gateway": "10.9.0.1", "rangeStart": "10.9.0.6", "rangeEnd": "10.9.0.6"},
    ]
    assert conflist._ranges(IPAMPool("10.9.0.0/24", "10.9.0.1")) == [{"subnet": "10.9.0.0/24", "gateway": "10.9.0.1"}]
    with pytest.raises(errors.InvalidArgument, match="must belong to the master pool"):
        conflist.complete_pool(IPAMPool("10.9.0.0/24", aux={"a": "10.10.0.1"}))
    with pytest.raises(errors.InvalidArgument, match="range"):
        conflist.complete_pool(IPAMPool("2001:389::/64", ip_range="10.0.0.0/24"))
    ula = conflist.ula_subnet("0123456789abcdef" * 4)
    assert str(ula) == "fd01:2345:6789:abcd::/64" and ula.prefixlen == 64


def test_log_rotation_options() -> None:
    assert translate.log_rotation(LogConfig()) is None
    assert translate.log_rotation(LogConfig("json-file", {"max-size": "10m", "max-file": "3"})) == \
        LogRotation(10 << 20, 3, False)
    assert translate.log_rotation(LogConfig("local")) == LogRotation(20 << 20, 5, True)
    assert translate.log_rotation(LogConfig("json-file", {"max-size": "1.5k"})) == LogRotation(1536, 1, False)
    assert translate.log_rotation(LogConfig("none")) is None
    for config, why in (({"max-size": "ten"}, "invalid size"), ({"max-size": "1k", "max-file": "0"}, "less than 1"),
                        ({"max-size": "1k", "compress": "true"}, "compress cannot be true"),
                        ({"max-size": "1k", "max-file": "2", "compress": "yes"}, "ParseBool")):
        with pytest.raises(errors.InvalidArgument, match=why):
            translate.log_rotation(LogConfig("json-file", config))


def _feed(writer: LogWriter, lines: int) -> None:
    stream = Stream(0, b"stdout")
    writer.feed(stream, b"".join(b"line%d\n" % i for i in range(1, lines + 1)))


@pytest.mark.parametrize("compress", [False, True])
def test_logger_rotates_whole_records(tmp_path: Path, compress: bool) -> None:
    path = tmp_path / "c.log"
    writer = LogWriter(str(path), max_size=1024, max_files=3, compress=compress)
    _feed(writer, 200)
    writer.close()
    ext = ".gz" if compress else ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.log", f"c.log.1{ext}", f"c.log.2{ext}"]
    texts = []
    for name in (f"c.log.2{ext}", f"c.log.1{ext}", "c.log"):
        data = (tmp_path / name).read_bytes()
        data = gzip.decompress(data) if name.endswith(".gz") else data
        assert 0 < len(data) <= 1024 and data.endswith(b"\n")
        texts += [line.split()[-1] for line in data.splitlines()]
    assert texts[-1] == b"line200"
    first = int(texts[0].removeprefix(b"line"))
    assert texts == [b"line%d" % i for i in range(first, 201)]


def test_logger_with_one_file_starts_over(tmp_path: Path) -> None:
    path = tmp_path / "c.log"
    writer = LogWriter(str(path), max_size=512, max_files=1)
    _feed(writer, 100)
    writer.close()
    assert [p.name for p in tmp_path.iterdir()] == ["c.log"] and path.stat().st_size <= 512
    assert path.read_bytes().endswith(b" line100\n")


def test_volumes_from() -> None:
    assert mounts.parse_volumes_from("src") == ("src", True)
    assert mounts.parse_volumes_from("src:ro") == ("src", False)
    assert mounts.parse_volumes_from("src:rw,z") == ("src", True)
    for bad in ("", "src:rx", ":ro", "src:ro,rw"):
        with pytest.raises(errors.InvalidArgument):
            mounts.parse_volumes_from(bad)
    points = [MountPoint(MountType.VOLUME, "/v", "/var/v/_data", name="v", driver="local"),
              MountPoint(MountType.BIND, "/b", "/srv", rw=False, propagation="rprivate"),
              MountPoint(MountType.TMPFS, "/t"),
              MountPoint(MountType.VOLUME, "/mine", "/var/w/_data", name="w")]
    own = [MountSpec(MountType.VOLUME, "/mine", "x")]
    got = mounts.inherited(own, points, read_write=True)
    assert got == [MountSpec(MountType.VOLUME, "/v", "v", no_copy=True, volume_driver="local"),
                   MountSpec(MountType.BIND, "/b", "/srv", read_only=True, propagation="rprivate")]
    assert all(m.read_only for m in mounts.inherited(own, points, read_write=False))


def test_endpoint_settings_from_the_create_body() -> None:
    spec = container_spec({"Image": "busybox", "MacAddress": "02:42:AC:11:00:02", "NetworkingConfig": {
        "EndpointsConfig": {"default": {"MacAddress": "02-42-ac-11-00-03", "DriverOpts": {"k": "v"}},
                            "net": {"IPAMConfig": {"IPv6Address": "fd00::5"}, "Aliases": ["a", "a"]}}}})
    assert spec.mac_address == "02:42:ac:11:00:02"
    bridge, net = spec.endpoints
    assert (bridge.network, bridge.mac_address, bridge.driver_opts) == ("bridge", "02:42:ac:11:00:03", {"k": "v"})
    assert (net.ipv6_address, net.aliases) == ("fd00::5", ("a",))
    for bad in ("02:42:ac:11:00", "zz:42:ac:11:00:02", "02:42-ac:11:00:02"):
        with pytest.raises(errors.InvalidArgument, match="invalid MAC address"):
            mac_address(bad)
