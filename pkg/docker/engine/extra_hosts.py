"""Docker's ``--add-host`` entries (HostConfig.ExtraHosts): validated as moby's ValidateExtraHost does, and
never anything that could add a line of its own to the container's /etc/hosts."""
from __future__ import annotations

import ipaddress

from pkg import errors

HOST_GATEWAY = "host-gateway"


def parse(entry: str) -> tuple[str, str]:
    """("name", "ip") of "name:ip" or "name=ip" (an IPv6 address may be bracketed); InvalidArgument else."""
    host, sep, ip = entry.partition("=")
    if not sep:
        host, sep, ip = entry.partition(":")
    # moby checks the separator, an empty name and a colon in it; whitespace or a control character would
    # write extra names or lines into /etc/hosts, so they are refused the same way.
    if not sep or not host or ":" in host or any(ch.isspace() or ord(ch) < 0x20 or ch == "\x7f" for ch in host):
        raise errors.InvalidArgument(f"bad format for add-host: {entry!r}")
    if ip == HOST_GATEWAY:
        return host, ip
    address = ip[1:-1] if ip.startswith("[") and ip.endswith("]") else ip
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise errors.InvalidArgument(f"invalid IP address in add-host: {ip!r}") from None
    return host, address


def validate(entries: tuple[str, ...]) -> None:
    for entry in entries:
        parse(entry)
