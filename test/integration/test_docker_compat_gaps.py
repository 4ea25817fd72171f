"""Docker compatibility gaps closed for issue 13, through the real docker CLI (and aiohttp for the
WebSocket attach): MAC addresses, --volumes-from, --uts/--cgroupns, IPv6 and dual-stack networks, IPAM
auxiliary addresses, connect-time endpoint settings, network names, volume subpaths, log rotation.

One narwhald for the module; each test removes what it made.  Subnets 10.209.x and fd00:209:x::/64
are this module's alone.
"""
from __future__ import annotations

import asyncio
import gzip
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import docker
import pytest
from lib.docker import DockerDaemon, docker_daemon, eventually
from lib.leaks import leftovers
from lib.registry import Registry


@pytest.fixture(scope="module")
def dockerd(registry: Registry) -> Iterator[DockerDaemon]:
    yield from docker_daemon(registry)


@pytest.fixture
def dd(dockerd: DockerDaemon) -> Iterator[DockerDaemon]:
    yield dockerd
    dockerd.rm_all()
    dockerd.docker("network", "prune", "-f", check=False)
    dockerd.docker("volume", "prune", "-af", check=False)


def _wait_exit(dd: DockerDaemon, ref: str) -> int:
    return int(dd.out("wait", ref))


def test_mac_address_on_the_default_and_user_networks(dd: DockerDaemon) -> None:
    dd.out("run", "-d", "--name", "m1", "--mac-address", "02:42:AC:11:00:0A", "busybox", "sleep", "60")
    info = dd.inspect("m1")
    assert info["NetworkSettings"]["MacAddress"] == "02:42:ac:11:00:0a"
    assert info["NetworkSettings"]["Networks"]["bridge"]["MacAddress"] == "02:42:ac:11:00:0a"
    assert dd.out("exec", "m1", "cat", "/sys/class/net/eth0/address") == "02:42:ac:11:00:0a"

    dd.out("network", "create", "--subnet", "10.209.0.0/24", "macnet")
    dd.out("create", "--name", "m2", "--network", "bridge", "busybox", "sleep", "60")
    dd.out("network", "connect", "--driver-opt", "k=v", "--ip", "10.209.0.50", "macnet", "m2")
    dd.out("start", "m2")
    net = dd.inspect("m2")["NetworkSettings"]["Networks"]["macnet"]
    assert net["IPAMConfig"] == {"IPv4Address": "10.209.0.50"} and net["DriverOpts"] == {"k": "v"}
    assert net["IPAddress"] == "10.209.0.50"
    dd.out("network", "disconnect", "macnet", "m2")
    assert "macnet" not in dd.inspect("m2")["NetworkSettings"]["Networks"]

    client = docker.APIClient(base_url=f"unix://{dd.daemon.docker_socket}")
    with pytest.raises(docker.errors.APIError, match="invalid MAC address 02:42:zz:11:00:0a"):
        client.create_container("busybox", "true", mac_address="02:42:zz:11:00:0a")
    client.close()


def test_volumes_from(dd: DockerDaemon, tmp_path: Path) -> None:
    (tmp_path / "host.txt").write_text("from-the-host\n")
    dd.out("run", "--name", "src", "-v", "named-vf:/named", "-v", "/anon", "-v", f"{tmp_path}:/bind",
           "busybox", "sh", "-c", "echo n > /named/f && echo a > /anon/f")
    out = dd.out("run", "--name", "reader", "--volumes-from", "src", "busybox",
                 "cat", "/named/f", "/anon/f", "/bind/host.txt")
    assert out.split() == ["n", "a", "from-the-host"]
    assert dd.inspect("reader")["HostConfig"]["VolumesFrom"] == ["src"]
    # :ro makes every inherited mount read-only; the container's own mount at a path wins.
    ro = dd.docker("run", "--volumes-from", "src:ro", "busybox", "sh", "-c", "echo x > /named/g",
                   check=False)
    assert ro.returncode != 0 and "Read-only file system" in ro.stderr
    own = dd.out("run", "--volumes-from", "src", "-v", "other-vf:/named", "busybox", "ls", "/named")
    assert own == ""
    # The anonymous volume is the source's: removing the reader with -v leaves it.
    anon = next(m["Name"] for m in dd.inspect("src")["Mounts"] if m["Destination"] == "/anon")
    dd.out("rm", "-v", "reader")
    assert anon in dd.out("volume", "ls", "-q").split()
    missing = dd.docker("run", "--volumes-from", "nosuch", "busybox", "true", check=False)
    assert missing.returncode != 0 and "No such container: nosuch" in missing.stderr
    bad = dd.docker("run", "--volumes-from", "src:rx", "busybox", "true", check=False)
    assert bad.returncode != 0 and "invalid mode: rx" in bad.stderr


def test_uts_and_cgroupns_modes(dd: DockerDaemon) -> None:
    assert dd.out("run", "--name", "uts", "--uts", "host", "busybox", "hostname") == socket.gethostname()
    assert dd.inspect("uts")["HostConfig"]["UTSMode"] == "host"
    assert dd.out("run", "busybox", "hostname") != socket.gethostname()
    conflict = dd.docker("run", "--uts", "host", "-h", "x", "busybox", "true", check=False)
    assert conflict.returncode != 0 and "conflicting options: hostname and the UTS mode" in conflict.stderr

    host_ns = os.readlink("/proc/self/ns/cgroup")
    private = dd.out("run", "--name", "cgp", "--cgroupns", "private", "busybox", "readlink", "/proc/self/ns/cgroup")
    assert private != host_ns and dd.inspect("cgp")["HostConfig"]["CgroupnsMode"] == "private"
    shared = dd.out("run", "--name", "cgh", "--cgroupns", "host", "busybox", "readlink", "/proc/self/ns/cgroup")
    assert shared == host_ns and dd.inspect("cgh")["HostConfig"]["CgroupnsMode"] == "host"
    dd.out("create", "--name", "cgd", "busybox", "true")
    assert dd.inspect("cgd")["HostConfig"]["CgroupnsMode"] in ("host", "private")  # the daemon's default, stored


def test_ipv6_and_dual_stack_networks(dd: DockerDaemon) -> None:
    dd.out("network", "create", "--ipv6", "--subnet", "10.209.1.0/24", "--subnet", "fd00:209:1::/64", "dual")
    net = json.loads(dd.out("network", "inspect", "dual"))[0]
    assert net["EnableIPv6"] is True
    assert [c["Subnet"] for c in net["IPAM"]["Config"]] == ["10.209.1.0/24", "fd00:209:1::/64"]
    dd.out("run", "-d", "--name", "six", "--network", "dual", "--ip6", "fd00:209:1::10", "busybox", "sleep", "60")
    settings = dd.inspect("six")["NetworkSettings"]["Networks"]["dual"]
    assert settings["GlobalIPv6Address"] == "fd00:209:1::10" and settings["GlobalIPv6PrefixLen"] == 64
    assert settings["IPAMConfig"]["IPv6Address"] == "fd00:209:1::10"
    assert settings["IPAddress"].startswith("10.209.1.")
    assert "fd00:209:1::10/64" in dd.out("exec", "six", "ip", "-6", "addr", "show", "eth0")
    ping = dd.docker("run", "--rm", "--network", "dual", "busybox", "ping", "-6", "-c", "1", "-W", "5",
                     "fd00:209:1::10", check=False)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    # Connected later with a fixed IPv6 address: shown, in /etc/hosts, gone again with disconnect.
    dd.out("run", "-d", "--name", "late6", "busybox", "sleep", "60")
    dd.out("network", "connect", "--ip6", "fd00:209:1::20", "dual", "late6")
    late = dd.inspect("late6")["NetworkSettings"]["Networks"]["dual"]
    assert late["IPAMConfig"] == {"IPv6Address": "fd00:209:1::20"} and late["GlobalIPv6Address"] == "fd00:209:1::20"
    assert "fd00:209:1::20\t" in dd.out("exec", "late6", "cat", "/etc/hosts")
    dd.out("network", "disconnect", "dual", "late6")
    assert "fd00:209:1::20" not in dd.out("exec", "late6", "cat", "/etc/hosts")

    # --ipv6 without a subnet: a unique local /64 is picked, beside the IPv4 one.
    dd.out("network", "create", "--ipv6", "auto6")
    pools = [c["Subnet"] for c in json.loads(dd.out("network", "inspect", "auto6"))[0]["IPAM"]["Config"]]
    assert len(pools) == 2 and pools[1].startswith("fd") and pools[1].endswith("/64")
    # An IPv6 address on a network without IPv6 is refused.
    dd.out("network", "create", "--subnet", "10.209.2.0/24", "four")
    bad = dd.docker("run", "--network", "four", "--ip6", "fd00:209:1::11", "busybox", "true", check=False)
    assert bad.returncode != 0 and "fd00:209:1::11" in bad.stderr
    v6_only_flag = dd.docker("network", "create", "--subnet", "fd00:209:3::/64", "noflag", check=False)
    assert v6_only_flag.returncode != 0 and "EnableIPv6" in v6_only_flag.stderr


def test_ipam_auxiliary_addresses_are_never_handed_out(dd: DockerDaemon) -> None:
    dd.out("network", "create", "--subnet", "10.209.4.0/29", "--aux-address", "a=10.209.4.2",
           "--aux-address", "b=10.209.4.3", "auxnet")
    config = json.loads(dd.out("network", "inspect", "auxnet"))[0]["IPAM"]["Config"]
    assert config == [{"Subnet": "10.209.4.0/29", "Gateway": "10.209.4.1",
                       "AuxiliaryAddresses": {"a": "10.209.4.2", "b": "10.209.4.3"}}]
    ips = []
    for n in range(3):
        dd.out("run", "-d", "--name", f"aux{n}", "--network", "auxnet", "busybox", "sleep", "60")
        ips.append(dd.inspect(f"aux{n}")["NetworkSettings"]["Networks"]["auxnet"]["IPAddress"])
    assert sorted(ips) == ["10.209.4.4", "10.209.4.5", "10.209.4.6"]


def test_network_names_as_moby_takes_them(dd: DockerDaemon) -> None:
    dd.out("network", "create", "--subnet", "10.209.7.0/24", "test 01")
    dd.out("run", "-d", "--name", "spaced", "--network", "test 01", "busybox", "sleep", "60")
    assert "test 01" in dd.inspect("spaced")["NetworkSettings"]["Networks"]
    dd.out("rm", "-f", "spaced")
    dd.out("network", "rm", "test 01")


def test_volume_subpath(dd: DockerDaemon) -> None:
    dd.out("volume", "create", "sub-vol")
    dd.out("run", "-v", "sub-vol:/vol", "busybox", "sh", "-c", "mkdir -p /vol/a/b && echo deep > /vol/a/b/f")
    out = dd.out("run", "--mount", "type=volume,src=sub-vol,dst=/m,volume-subpath=a/b,readonly",
                 "busybox", "cat", "/m/f")
    assert out == "deep"
    bad = dd.docker("run", "--rm", "--mount", "type=volume,src=sub-vol,dst=/m,volume-subpath=../x", "busybox", "true",
                    check=False)
    assert bad.returncode != 0 and "subpath must be a relative path" in bad.stderr
    missing = dd.docker("create", "--name", "later", "--mount", "type=volume,src=sub-vol,dst=/m,volume-subpath=not/yet",
                        "busybox", "true", check=False)
    assert missing.returncode != 0 and "cannot access path" in missing.stderr  # moby: at start; here at create
    assert "later" not in dd.out("ps", "-a", "--format", "{{.Names}}").split()
    # Swapped for a symlink out of the volume after create: refused at start.
    dd.out("run", "-v", "sub-vol:/vol", "busybox", "mkdir", "/vol/swap")
    dd.out("create", "--name", "swapped", "--mount", "type=volume,src=sub-vol,dst=/m,volume-subpath=swap", "busybox",
           "true")
    dd.out("run", "-v", "sub-vol:/vol", "busybox", "sh", "-c", "rmdir /vol/swap && ln -s /etc /vol/swap")
    swapped = dd.docker("start", "swapped", check=False)
    assert swapped.returncode != 0 and "leaves the volume" in swapped.stderr
    dd.out("run", "-v", "sub-vol:/vol", "busybox", "ln", "-s", "/etc", "/vol/escape")
    escape = dd.docker("run", "--mount", "type=volume,src=sub-vol,dst=/m,volume-subpath=escape", "busybox", "true",
                       check=False)
    assert escape.returncode != 0 and "leaves the volume" in escape.stderr


def _log_files(log_path: str) -> list[str]:
    base = Path(log_path)
    return sorted(p.name for p in base.parent.iterdir() if p.name.startswith(base.name))


@pytest.mark.parametrize("compress", [False, True])
def test_log_rotation_is_enforced(dd: DockerDaemon, compress: bool) -> None:
    name = f"rot{int(compress)}"
    opts = ["--log-opt", "max-size=2k", "--log-opt", "max-file=3"]
    if compress:
        opts += ["--log-opt", "compress=true"]
    dd.out("run", "--name", name, *opts, "busybox", "sh", "-c",
           "i=0; while [ $i -lt 300 ]; do i=$((i+1)); echo line$i; done")
    log_path = dd.inspect(name)["LogPath"]
    ext = ".gz" if compress else ""
    assert _log_files(log_path) == sorted([Path(log_path).name, f"{Path(log_path).name}.1{ext}",
                                           f"{Path(log_path).name}.2{ext}"])
    assert Path(log_path).stat().st_size <= 2048
    rotated = Path(f"{log_path}.1{ext}")
    data = gzip.decompress(rotated.read_bytes()) if compress else rotated.read_bytes()
    assert 0 < len(data) <= 2048
    lines = dd.out("logs", name).split()
    assert lines[-1] == "line300" and "line1" not in lines  # the oldest went with the dropped file
    first = int(lines[0].removeprefix("line"))
    assert lines == [f"line{i}" for i in range(first, 301)]  # all three files, in order, nothing lost between
    assert dd.out("logs", "--tail", "5", name).split() == [f"line{i}" for i in range(296, 301)]
    tail_across = len(lines) - 2
    assert dd.out("logs", "--tail", str(tail_across), name).split() == lines[2:]
    for bad, why in ((["--log-opt", "max-size=ten"], "invalid size"),
                     (["--log-opt", "max-size=1k", "--log-opt", "max-file=0"], "max-file cannot be less than 1"),
                     (["--log-opt", "max-size=1k", "--log-opt", "compress=true"], "compress cannot be true")):
        proc = dd.docker("run", "--rm", *bad, "busybox", "true", check=False)
        assert proc.returncode != 0 and why in proc.stderr


def test_log_rotation_with_stdin_open(dd: DockerDaemon) -> None:
    # -i: narwhald runs the logger itself on fifos; the rotation options reach it too.
    dd.docker("run", "-i", "--name", "roti", "--log-opt", "max-size=1k", "--log-opt", "max-file=2", "busybox",
              "sh", "-c", "while read l; do echo $l; done", input_="".join(f"in{i}\n" for i in range(1, 151)))
    log_path = dd.inspect("roti")["LogPath"]
    assert _log_files(log_path) == sorted([Path(log_path).name, f"{Path(log_path).name}.1"])
    assert dd.out("logs", "roti").split()[-1] == "in150"


def test_local_log_driver_rotates_by_default(dd: DockerDaemon) -> None:
    dd.out("run", "--name", "loc", "--log-driver", "local", "--log-opt", "max-size=1k", "busybox", "sh", "-c",
           "i=0; while [ $i -lt 100 ]; do i=$((i+1)); echo row$i; done")
    files = _log_files(dd.inspect("loc")["LogPath"])
    assert any(f.endswith(".1.gz") for f in files)  # local compresses by default
    assert dd.out("logs", "loc").split()[-1] == "row100"


def test_websocket_attach(dd: DockerDaemon) -> None:
    cid = dd.out("create", "-i", "busybox", "sh", "-c", "read x; echo got-$x; echo to-err >&2")

    async def session() -> list[bytes]:
        connector = aiohttp.UnixConnector(path=str(dd.daemon.docker_socket))
        async with aiohttp.ClientSession(connector=connector) as http:
            url = f"http://docker/v1.45/containers/{cid}/attach/ws?stream=1&stdin=1&stdout=1&stderr=1"
            async with http.ws_connect(url) as ws:
                await asyncio.to_thread(dd.out, "start", cid)
                await ws.send_bytes(b"hello\n")
                got: list[bytes] = []
                async for msg in ws:
                    assert msg.type == aiohttp.WSMsgType.BINARY
                    got.append(msg.data)
                return got

    got = asyncio.run(asyncio.wait_for(session(), 60))
    assert b"".join(got) in (b"got-hello\nto-err\n", b"to-err\ngot-hello\n")
    assert _wait_exit(dd, cid) == 0


def test_nothing_left_behind(dockerd: DockerDaemon) -> None:
    dockerd.rm_all()
    dockerd.docker("network", "prune", "-f", check=False)
    dockerd.docker("volume", "prune", "-af", check=False)
    assert eventually(lambda: not leftovers(dockerd.daemon)), leftovers(dockerd.daemon)
    tuning = dockerd.daemon.state / "cni" / "tuning"  # the tuning plugin's restore-on-DEL backups
    assert not (list(tuning.iterdir()) if tuning.exists() else [])
