"""Legacy links: parsing, the environment and /etc/hosts lines moby derives from a link, and link aliases in the
embedded DNS's records (a user network's endpoint Links resolve for the linking sandbox only)."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from pkg import errors
from pkg.cni.model import Endpoint
from pkg.docker.engine import links
from pkg.docker.networks.model import Network
from pkg.docker.networks.records import DNSRecords


def test_parse() -> None:
    assert links.parse("db:alias") == ("db", "alias")
    assert links.parse("/db") == ("db", "db")
    assert links.parse("/db:/alias") == ("db", "alias")
    for bad in ("a:b:c", ":x", "db:", ""):
        with pytest.raises(errors.InvalidArgument, match="bad format for links"):
            links.parse(bad)
    assert links.check_links(["a:b", "c"]) == ("a:b", "c")


def test_env_as_moby_writes_it() -> None:
    env = links.link_env("/me/my-db", "10.0.0.5", ["PATH=/bin", "HOME=/root", "PASS=a=b", "NOVALUE"],
                         ["5432/tcp", "80/udp", "80/tcp", "81/tcp"])
    assert env[0] == "MY_DB_PORT=tcp://10.0.0.5:80"  # the lowest port, tcp before udp
    # 80/tcp, 80/udp, 81/tcp form one run of consecutive numbers (moby ignores the protocol there)
    assert "MY_DB_PORT_80_TCP_START=tcp://10.0.0.5:80" in env
    assert "MY_DB_PORT_80_TCP_END=tcp://10.0.0.5:81" in env and "MY_DB_PORT_80_TCP_PORT_END=81" in env
    for port, proto in ((80, "tcp"), (80, "udp"), (81, "tcp"), (5432, "tcp")):
        key = f"MY_DB_PORT_{port}_{proto.upper()}"
        assert f"{key}={proto}://10.0.0.5:{port}" in env
        assert {f"{key}_ADDR=10.0.0.5", f"{key}_PORT={port}", f"{key}_PROTO={proto}"} <= set(env)
    assert "MY_DB_NAME=/me/my-db" in env
    assert [e for e in env if "_ENV_" in e] == ["MY_DB_ENV_PASS=a=b"]  # no PATH/HOME, no value-less entries
    assert links.link_env("/me/x", "10.0.0.5", [], []) == ["X_NAME=/me/x"]


def test_hosts_line_and_env_merge() -> None:
    assert links.hosts_line("10.0.0.5", "alias", "abc123", "db") == "10.0.0.5\talias abc123 db\n"
    assert links.hosts_line("10.0.0.5", "db", "abc123", "db") == "10.0.0.5\tdb abc123\n"
    assert links.merge_env(["A_NAME=/x/a", "FOO=link"], ["FOO=own", "BAR=1"]) == ["A_NAME=/x/a", "FOO=own", "BAR=1"]


@dataclass
class _Owner:
    id: str
    name: str


class _Table:
    """A fake endpoint table: two sandboxes on one user network, one with a link alias."""

    def __init__(self) -> None:
        self.net = Network(id="n" * 64, name="un", driver="bridge", created="", cni_name="cni-un")
        self.endpoints = {
            "sb-me": [Endpoint("sb-me", "un", "cni-un", "eth0", ip="10.1.0.2", links=("db:dbalias",))],
            "sb-db": [Endpoint("sb-db", "un", "cni-un", "eth0", ip="10.1.0.3")],
            "sb-other": [Endpoint("sb-other", "un", "cni-un", "eth0", ip="10.1.0.4")],
        }
        self.owners = {"sb-me": _Owner("a" * 64, "me"), "sb-db": _Owner("b" * 64, "db"),
                       "sb-other": _Owner("c" * 64, "other")}

    def table(self) -> dict[str, list[Endpoint]]:
        return self.endpoints

    def owner(self, sandbox_id: str) -> _Owner | None:
        return self.owners.get(sandbox_id)

    def network_of(self, ep: Endpoint) -> Network | None:
        return self.net if ep.cni_network == "cni-un" else None

    def dns_servers(self, sandbox_id: str) -> tuple[str, ...]:
        return ()

    def remote(self, network_id: str) -> list[tuple[str, tuple[str, ...]]]:
        return [("10.1.0.9", ("far", "tasks.far"))] if network_id == self.net.id else []


def test_link_alias_resolves_for_the_linking_sandbox_only() -> None:
    records = DNSRecords(_Table())
    assert records.lookup("sb-me", "dbalias") == ["10.1.0.3"]
    assert records.lookup("sb-me", "DBALIAS.un.") == ["10.1.0.3"]
    assert records.lookup("sb-me", "db") == ["10.1.0.3"]
    assert records.lookup("sb-other", "dbalias") is None
    # names of another node's endpoints on a swarm overlay (records from etcd) resolve too
    assert records.lookup("sb-me", "tasks.far") == ["10.1.0.9"]
    assert records.lookup("sb-me", "FAR.un") == ["10.1.0.9"]
    assert records.lookup("sb-other", "db") == ["10.1.0.3"]
