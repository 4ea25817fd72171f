"""A pod's /etc/resolv.conf, /etc/hosts and /etc/hostname, written once per sandbox and bind-mounted into
every container of the pod (as containerd's CRI does).

Content builders are pure; ``write_*`` do blocking file I/O (call them via
``asyncio.to_thread``) and replace files atomically, so a container never
sees a half-written file.
"""
from __future__ import annotations

import ipaddress
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from pkg.errors import InvalidArgument
from pkg.model.spec import DNSConfig as DNSConfig  # re-exported: defined with the models

HOST_RESOLV_CONF = Path("/etc/resolv.conf")
HOST_HOSTS = Path("/etc/hosts")

_LOCALHOST_ENTRIES = (
    ("127.0.0.1", "localhost"),
    ("::1", "localhost ip6-localhost ip6-loopback"),
    ("fe00::0", "ip6-localnet"),
    ("fe00::0", "ip6-mcastprefix"),
    ("fe00::1", "ip6-allnodes"),
    ("fe00::2", "ip6-allrouters"),
)


def _clean(value: str, what: str) -> str:
    if not value or any(ch.isspace() for ch in value) or "#" in value or ";" in value:
        raise InvalidArgument(f"invalid DNS {what} {value!r}")
    return value


def resolv_conf_content(dns: DNSConfig) -> str:
    """resolv.conf text for a DNSConfig, "" when it sets nothing (the host's file is used then)."""
    lines = []
    if dns.searches:
        lines.append("search " + " ".join(_clean(s, "search domain") for s in dns.searches))
    for server in dns.servers:
        try:
            ipaddress.ip_address(server.split("%", 1)[0])
        except ValueError:
            raise InvalidArgument(f"DNS server {server!r} is not an IP address") from None
        lines.append(f"nameserver {server}")
    if dns.options:
        lines.append("options " + " ".join(_clean(o, "option") for o in dns.options))
    return "".join(line + "\n" for line in lines)


def _check_hostname(hostname: str) -> str:
    if not hostname or len(hostname) > 253 or any(ch.isspace() or ch in "/\0" for ch in hostname):
        raise InvalidArgument(f"invalid hostname {hostname!r}")
    return hostname


def hosts_content(hostname: str = "", ips: Iterable[str] = (), extra: Sequence[tuple[str, str]] = ()) -> str:
    """/etc/hosts for a pod with its own network: loopback names, then ``ip hostname`` for each pod IP."""
    lines = [f"{ip}\t{names}" for ip, names in _LOCALHOST_ENTRIES]
    for ip in ips:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise InvalidArgument(f"pod IP {ip!r} is not an IP address") from None
        if hostname:
            lines.append(f"{ip}\t{_check_hostname(hostname)}")
    for ip, names in extra:
        ipaddress.ip_address(ip)
        lines.append(f"{ip}\t{' '.join(_clean(n, 'host name') for n in names.split())}")
    return "".join(line + "\n" for line in lines)


def hostname_content(hostname: str) -> str:
    return _check_hostname(hostname) + "\n"


def _write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            os.fchmod(f.fileno(), mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_resolv_conf(path: Path, dns: DNSConfig | None, host_file: Path = HOST_RESOLV_CONF) -> None:
    """The pod's resolv.conf from its DNSConfig, or a copy of the host's when none is given."""
    content = resolv_conf_content(dns) if dns is not None else ""
    if content:
        _write_atomic(path, content.encode())
    else:
        _write_atomic(path, host_file.read_bytes() if host_file.exists() else b"")


def write_hosts(path: Path, *, hostname: str = "", ips: Iterable[str] = (), host_network: bool = False,
                host_file: Path = HOST_HOSTS) -> None:
    """The pod's /etc/hosts: the host's own for host-network pods, else loopback + ``ip hostname`` lines."""
    if host_network:
        _write_atomic(path, host_file.read_bytes() if host_file.exists() else hosts_content().encode())
    else:
        _write_atomic(path, hosts_content(hostname, ips).encode())


def write_hostname(path: Path, hostname: str) -> None:
    _write_atomic(path, hostname_content(hostname).encode())
