"""Swarm addresses: listen/advertise "host[:port]" as moby takes them, etcd endpoints."""
from __future__ import annotations

import socket

from pkg import errors


def split_addr(value: str, default_port: int) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or "]" in port:
        host, port = value, str(default_port)
    host = host.strip("[]")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise errors.InvalidArgument(f"invalid listen address {value}")
    if host and not _is_ip(host):
        raise errors.InvalidArgument(f"advertise address must be a non-zero IP address or network interface "
                                     f"(with optional port number), got {host!r}")
    return host, int(port)


def join_addr(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _is_ip(host: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    except OSError:
        return False
    return True


def default_address() -> str:
    """The address of the interface of the default route (no packet is sent), else loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))
            return str(s.getsockname()[0])
        except OSError:
            return "127.0.0.1"


def endpoint(value: str) -> tuple[str, int]:
    text = value.split("://", 1)[-1].rstrip("/")
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)
