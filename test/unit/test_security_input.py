"""Bad input is refused cleanly (issue 15): trailing newlines in names, non-finite and oversized JSON numbers,
non-ASCII digits, --add-host injection, and name filters that would backtrack forever in Python's re."""
from __future__ import annotations

import time

import pytest

from dockerapi import params, times
from dockerapi.handlers import containers_request
from pkg import errors, goregexp
from pkg.docker.engine import extra_hosts, names
from pkg.docker.networks.connect import DNS_NAME
from pkg.docker.volumes import local
from pkg.images import reference


@pytest.mark.parametrize("name", ["web\n", "/web\n", "web\nx", "wéb", "w"])
def test_container_names_are_matched_whole(name: str) -> None:
    with pytest.raises(errors.InvalidArgument):
        names.validate(name)


def test_other_names_are_matched_whole() -> None:
    with pytest.raises(errors.InvalidArgument):
        local.validate_name("vol\n")
    assert DNS_NAME.match("alias\n") is None
    for bad in ("busybox\n", "busybox:latest\n", "busybox:١٢", "busybox@sha256:" + "a" * 64 + "\n"):
        with pytest.raises(errors.InvalidArgument):
            reference.parse(bad)


@pytest.mark.parametrize("raw", ['{"Memory": 1e400}', '{"Memory": NaN}', '{"Memory": Infinity}',
                                 '{"Memory": -Infinity}', '{"Memory": 1' + "0" * 30 + "}",
                                 '{"Memory": 1' + "0" * 5000 + "}"])
def test_json_numbers_out_of_go_range_are_refused(raw: str) -> None:
    with pytest.raises(ValueError):
        params.loads(raw)


def test_json_numbers_in_range_are_kept() -> None:
    assert params.loads('{"a": 9223372036854775807, "b": -1.5e3, "c": 18446744073709551615}') == {
        "a": (1 << 63) - 1, "b": -1500.0, "c": (1 << 64) - 1}


def test_int64_fields_refuse_overflow_and_fractions() -> None:
    for value in (1 << 63, 1.5, float(1 << 64)):
        with pytest.raises(errors.InvalidArgument, match="cannot unmarshal number"):
            containers_request._int({"Memory": value}, "Memory")


@pytest.mark.parametrize("port", ["８０", "8٠", "²", "80\n", "0", "65536"])
def test_ports_with_non_ascii_digits_are_refused(port: str) -> None:
    with pytest.raises(errors.InvalidArgument):
        containers_request._port_key(f"{port}/tcp")


def test_times_refuse_non_ascii_digits() -> None:
    for value in ("١٢٣", "²", "1.²", "2024-01-01T00:00:00.١"):
        with pytest.raises(errors.InvalidArgument):
            times.timestamp(value, time.time_ns())


@pytest.mark.parametrize("entry", ["web\n1.2.3.4 evil:1.2.3.4", "we b:1.2.3.4", "web:1.2.3.4\nevil", ":1.2.3.4",
                                   "web", "web:not-an-ip", "web:1.2.3.4 evil", "a:b:c"])
def test_add_host_refuses_injection_and_bad_addresses(entry: str) -> None:
    with pytest.raises(errors.InvalidArgument, match="add-host"):
        extra_hosts.parse(entry)


@pytest.mark.parametrize(("entry", "parsed"), [("web:1.2.3.4", ("web", "1.2.3.4")), ("web=::1", ("web", "::1")),
                                               ("web:[::1]", ("web", "::1")),
                                               ("gw:host-gateway", ("gw", "host-gateway"))])
def test_add_host_accepts_moby_forms(entry: str, parsed: tuple[str, str]) -> None:
    assert extra_hosts.parse(entry) == parsed


def test_name_filter_is_linear_time() -> None:
    """field-notes.md "A filter that freezes the daemon": Python's re takes exponential time on this."""
    start = time.monotonic()
    assert goregexp.search("(a+)+$", "/" + "a" * 30 + "-") is False
    assert goregexp.search("(x+x+)+y", "x" * 5000) is False
    assert time.monotonic() - start < 1.0
    assert goregexp.search("^/web", "/web1") is True
    assert goregexp.search("^/web$", "/web\n") is False  # Go's $ is the end of the text
    assert goregexp.search("(", "x") is None
    assert goregexp.search(r"(a)\1", "aa") is None  # no backreferences in RE2, as in Go
