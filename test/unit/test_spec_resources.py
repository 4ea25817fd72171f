"""Resources conversion and clamps, capabilities arithmetic, cgroups paths and the pod's /etc files."""
from __future__ import annotations

import resource
from pathlib import Path

import pytest

from pkg.errors import InvalidArgument
from pkg.runtime import caps
from pkg.runtime.etc_files import (
    DNSConfig,
    hosts_content,
    resolv_conf_content,
    write_hostname,
    write_hosts,
    write_resolv_conf,
)
from pkg.runtime.resources import (
    CgroupFacts,
    HugepageLimit,
    Resources,
    Rlimit,
    cgroups_path,
    clamp_oom_score_adj,
    clamp_rlimits,
    current_oom_score_adj,
    linux_resources,
    merge_resources,
)
from pkg.runtime.spec_mounts import host_devices

V1 = CgroupFacts(v2=False, swap=True, hugetlb=True)
V2 = CgroupFacts(v2=True, swap=True, hugetlb=True)


# ---- resources ----
def test_empty_resources() -> None:
    assert linux_resources(Resources(), V1) == {}


def test_cpu_and_memory() -> None:
    got = linux_resources(Resources(cpu_period=100000, cpu_quota=20000, cpu_shares=256, cpuset_cpus="0,2-3",
                                    cpuset_mems="0", memory_limit_in_bytes=256 << 20), V1)
    assert got == {"cpu": {"period": 100000, "quota": 20000, "shares": 256, "cpus": "0,2-3", "mems": "0"},
                   "memory": {"limit": 256 << 20, "swap": 256 << 20}}


def test_swap() -> None:
    assert linux_resources(Resources(memory_limit_in_bytes=100 << 20, memory_swap_limit_in_bytes=300 << 20),
                           V1)["memory"] == {"limit": 100 << 20, "swap": 300 << 20}
    assert linux_resources(Resources(memory_limit_in_bytes=100 << 20, memory_swap_limit_in_bytes=-1),
                           V1)["memory"] == {"limit": 100 << 20, "swap": -1}
    no_swap = CgroupFacts(v2=False, swap=False)
    assert linux_resources(Resources(memory_limit_in_bytes=100 << 20), no_swap)["memory"] == {"limit": 100 << 20}


def test_hugepages_pids_unified() -> None:
    res = Resources(hugepage_limits=(HugepageLimit("2MB", 1 << 30),), pids_limit=100, unified={"memory.high": "1G"})
    assert linux_resources(res, V2) == {"hugepageLimits": [{"pageSize": "2MB", "limit": 1 << 30}],
                                        "pids": {"limit": 100}, "unified": {"memory.high": "1G"}}
    # No hugetlb controller: skipped (containerd's default tolerate_missing_hugetlb_controller).
    assert "hugepageLimits" not in linux_resources(Resources(hugepage_limits=(HugepageLimit("2MB", 1),)),
                                                   CgroupFacts(v2=False, hugetlb=False))


def test_unified_needs_v2() -> None:
    with pytest.raises(InvalidArgument, match="cgroup v2"):
        linux_resources(Resources(unified={"memory.high": "1G"}), V1)


@pytest.mark.parametrize("res", [
    Resources(cpu_period=-1),
    Resources(cpu_period=10),
    Resources(cpu_quota=-5),
    Resources(cpu_quota=10),
    Resources(cpu_shares=-1),
    Resources(memory_limit_in_bytes=-1),
    Resources(memory_swap_limit_in_bytes=-2),
    Resources(memory_limit_in_bytes=200, memory_swap_limit_in_bytes=100),
    Resources(cpuset_cpus="0-"),
    Resources(cpuset_mems="a"),
    Resources(hugepage_limits=(HugepageLimit("2M", 1),)),
    Resources(unified={"../x": "1"}),
    Resources(oom_score_adj=1001),
    Resources(pids_limit=-2),
])
def test_invalid_resources(res: Resources) -> None:
    with pytest.raises(InvalidArgument):
        linux_resources(res, V2)


def test_quota_unlimited_is_kept() -> None:
    assert linux_resources(Resources(cpu_quota=-1), V1) == {"cpu": {"quota": -1}}


# ---- oom_score_adj and rlimits ----
def test_oom_clamp() -> None:
    assert clamp_oom_score_adj(-999, floor=-500) == -500
    assert clamp_oom_score_adj(100, floor=-500) == 100
    assert clamp_oom_score_adj(-998, floor=0) == 0
    assert clamp_oom_score_adj(5) == max(5, current_oom_score_adj())
    with pytest.raises(InvalidArgument):
        clamp_oom_score_adj(-1001, floor=0)


def test_oom_read_from_proc(tmp_path: Path) -> None:
    f = tmp_path / "oom"
    f.write_text("-17\n")
    assert current_oom_score_adj(f) == -17


def test_rlimits_clamped_to_hard_limits() -> None:
    got = clamp_rlimits([Rlimit("nofile", 1024, 1 << 20), Rlimit("RLIMIT_NPROC", 40000, 50000),
                         Rlimit("core", -1, -1)], {"RLIMIT_NOFILE": 20000, "RLIMIT_NPROC": 32768})
    assert got == [{"type": "RLIMIT_NOFILE", "hard": 20000, "soft": 1024},
                   {"type": "RLIMIT_NPROC", "hard": 32768, "soft": 32768},
                   {"type": "RLIMIT_CORE", "hard": 2**64 - 1, "soft": 2**64 - 1}]


def test_rlimits_default_to_the_daemons_own() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    (got,) = clamp_rlimits([Rlimit("nofile", 1, 2**63)])
    assert got["hard"] == (2**64 - 1 if hard == resource.RLIM_INFINITY else hard)


@pytest.mark.parametrize("lim", [Rlimit("nope", 1, 1), Rlimit("nofile", 10, 5), Rlimit("nofile", -7, 5)])
def test_bad_rlimits(lim: Rlimit) -> None:
    with pytest.raises(InvalidArgument):
        clamp_rlimits([lim], {})


def test_cgroups_path() -> None:
    assert cgroups_path("narwhal-1", "abc") == "/narwhal-1/abc"
    assert cgroups_path("/kubepods/besteffort/pod12/", "abc") == "/kubepods/besteffort/pod12/abc"
    assert cgroups_path("", "abc") == "/abc"
    for parent, cid in (("../escape", "abc"), ("ok", "a/b"), ("ok", "")):
        with pytest.raises(InvalidArgument):
            cgroups_path(parent, cid)


def test_cgroup_facts_probe(tmp_path: Path) -> None:
    (tmp_path / "memory").mkdir()
    (tmp_path / "memory" / "memory.memsw.limit_in_bytes").touch()
    assert CgroupFacts.probe(tmp_path) == CgroupFacts(v2=False, swap=True, hugetlb=False)
    v2 = tmp_path / "v2"
    (v2 / "init.scope").mkdir(parents=True)
    (v2 / "cgroup.controllers").write_text("cpu memory pids hugetlb\n")
    assert CgroupFacts.probe(v2) == CgroupFacts(v2=True, swap=False, hugetlb=True)
    (v2 / "init.scope" / "memory.swap.max").touch()
    assert CgroupFacts.probe(v2).swap


# ---- capabilities ----
def test_caps_normalize_and_mask() -> None:
    assert caps.normalize("net_admin") == caps.normalize("CAP_NET_ADMIN") == "CAP_NET_ADMIN"
    assert caps.caps_from_mask(0x1) == {"CAP_CHOWN"}
    assert caps.caps_from_mask(0x1fffeffffff) == set(caps.ALL_CAPS) - {"CAP_SYS_RESOURCE"}


def test_caps_from_status(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text("Name:\tx\nCapEff:\t0000000000003000\n")
    assert caps.current_effective_caps(status) == {"CAP_NET_ADMIN", "CAP_NET_RAW"}


def test_caps_add_and_drop_of_the_same() -> None:
    assert "CAP_KILL" not in caps.container_caps(add=["KILL"], drop=["KILL"])
    assert caps.container_caps(add=["ALL"], drop=["ALL"]) == []
    assert caps.container_caps(privileged=True, available=frozenset({"CAP_KILL"})) == ["CAP_KILL"]


# ---- /etc files ----
def test_resolv_conf_content() -> None:
    dns = DNSConfig(servers=("10.0.0.10", "fd00::a"), searches=("ns.svc.cluster.local", "cluster.local"),
                    options=("ndots:5", "edns0"))
    assert resolv_conf_content(dns) == ("search ns.svc.cluster.local cluster.local\n"
                                        "nameserver 10.0.0.10\nnameserver fd00::a\noptions ndots:5 edns0\n")
    assert resolv_conf_content(DNSConfig()) == ""


@pytest.mark.parametrize("dns", [
    DNSConfig(servers=("not-an-ip",)),
    DNSConfig(searches=("a b",)),
    DNSConfig(options=("ndots:5\nnameserver 6.6.6.6",)),
])
def test_bad_dns(dns: DNSConfig) -> None:
    with pytest.raises(InvalidArgument):
        resolv_conf_content(dns)


def test_write_resolv_conf(tmp_path: Path) -> None:
    host = tmp_path / "host-resolv"
    host.write_text("nameserver 1.1.1.1\n")
    out = tmp_path / "pod" / "resolv.conf"
    write_resolv_conf(out, None, host)
    assert out.read_text() == "nameserver 1.1.1.1\n"
    write_resolv_conf(out, DNSConfig(), host)  # a DNSConfig that sets nothing: the host's too
    assert out.read_text() == "nameserver 1.1.1.1\n"
    write_resolv_conf(out, DNSConfig(servers=("10.0.0.10",)), host)
    assert out.read_text() == "nameserver 10.0.0.10\n"
    assert oct(out.stat().st_mode & 0o777) == "0o644"


def test_hosts(tmp_path: Path) -> None:
    text = hosts_content("web-0", ["10.88.0.5", "fd00::5"])
    lines = text.splitlines()
    assert lines[0] == "127.0.0.1\tlocalhost"
    assert lines[1].startswith("::1\tlocalhost")
    assert lines[-2:] == ["10.88.0.5\tweb-0", "fd00::5\tweb-0"]
    with pytest.raises(InvalidArgument):
        hosts_content("web-0", ["nope"])
    with pytest.raises(InvalidArgument):
        hosts_content("bad host", ["10.0.0.1"])
    host = tmp_path / "host-hosts"
    host.write_text("127.0.0.1 localhost node\n")
    out = tmp_path / "hosts"
    write_hosts(out, hostname="web-0", ips=["10.88.0.5"])
    assert out.read_text() == text.replace("fd00::5\tweb-0\n", "")
    write_hosts(out, host_network=True, host_file=host)
    assert out.read_text() == "127.0.0.1 localhost node\n"


def test_hostname_file(tmp_path: Path) -> None:
    write_hostname(tmp_path / "hostname", "web-0")
    assert (tmp_path / "hostname").read_text() == "web-0\n"
    with pytest.raises(InvalidArgument):
        write_hostname(tmp_path / "hostname", "")
    assert [p.name for p in tmp_path.iterdir()] == ["hostname"]  # no temp files left behind


def test_host_devices_of_this_machine() -> None:
    paths = {d["path"] for d in host_devices(Path("/dev"))}
    assert "/dev/null" in paths
    assert not [p for p in paths if p.startswith(("/dev/pts/", "/dev/shm/"))]
    assert "/dev/console" not in paths


def test_merge_resources_keeps_what_the_update_does_not_set() -> None:
    current = {"devices": [{"allow": False, "access": "rwm"}], "cpu": {"shares": 2, "cpus": "0"},
               "memory": {"limit": 100, "swap": 100}, "pids": {"limit": 5}}
    merged = merge_resources(current, Resources(cpu_quota=50000, memory_limit_in_bytes=200), V1)
    assert merged == {"devices": [{"allow": False, "access": "rwm"}], "cpu": {"shares": 2, "cpus": "0", "quota": 50000},
                      "memory": {"limit": 200, "swap": 200}, "pids": {"limit": 5}}
    assert current["cpu"] == {"shares": 2, "cpus": "0"}  # not modified in place
