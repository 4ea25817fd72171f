"""The DNS config of a container on a user-defined network, as Docker writes it, and the in-place edits of a
running sandbox's resolv.conf and hosts when it joins or leaves a network.

Such a container's resolv.conf names only the embedded server (127.0.0.11,
see pkg.docker.dns.server), keeps the host's (or the container's --dns-search /
--dns-option) search domains and options, and adds ``ndots:0``.  The engine
passes the result as the sandbox's DNSConfig when the container joins a
user-defined network; ``rewrite_in_place`` updates a running sandbox's file
when it joins its first one (network connect).
"""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from pathlib import Path

from pkg.docker.dns.server import ADDRESS
from pkg.runtime.etc_files import HOST_RESOLV_CONF, DNSConfig, resolv_conf_content


def _host_search_and_options(host_file: Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    searches: tuple[str, ...] = ()
    options: list[str] = []
    try:
        lines = host_file.read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        fields = line.split()
        if fields and fields[0] in ("search", "domain"):
            searches = tuple(fields[1:])
        elif fields and fields[0] == "options":
            options += fields[1:]
    return searches, tuple(options)


def embedded_dns_config(requested: DNSConfig | None = None, host_file: Path = HOST_RESOLV_CONF) -> DNSConfig:
    """127.0.0.11 with the requested (else the host's) search domains and options, plus ndots:0
    unless an ndots option is given.  Blocking read of ``host_file``."""
    host_searches, host_options = _host_search_and_options(host_file)
    searches = requested.searches if requested is not None and requested.searches else host_searches
    options = requested.options if requested is not None and requested.options else host_options
    if not any(o.startswith("ndots:") for o in options):
        options = ("ndots:0", *options)
    elif requested is None or not requested.options:  # the host's ndots is for the host's resolver
        options = ("ndots:0", *(o for o in options if not o.startswith("ndots:")))
    return DNSConfig(servers=(ADDRESS,), searches=searches, options=options)


def rewrite_in_place(path: Path, host_file: Path = HOST_RESOLV_CONF) -> bool:
    """Point a running sandbox's resolv.conf at the embedded server, writing the file *in place*
    (containers bind-mount the file itself, so a rename would not reach them).  False when it already
    does or there is no file.  Blocking."""
    try:
        current = path.read_text()
    except OSError:
        return False
    if any(line.split()[:2] == ["nameserver", ADDRESS] for line in current.splitlines() if line.strip()):
        return False
    content = resolv_conf_content(embedded_dns_config(host_file=host_file))
    with open(path, "r+") as f:
        f.write(content)
        f.truncate()
    return True


def _write_in_place(path: Path, content: str) -> None:
    with open(path, "r+") as f:
        f.write(content)
        f.truncate()


def hosts_add(sandbox_dir: Path, ip: str) -> None:
    """``ip hostname`` in a running sandbox's /etc/hosts for an address it gained (network connect), as
    Docker adds it; in place, as the file is bind-mounted.  Blocking."""
    hosts = sandbox_dir / "hosts"
    try:
        hostname = (sandbox_dir / "hostname").read_text().strip()
        lines = hosts.read_text().splitlines()
    except OSError:
        return
    if not ip or not hostname or any(line.split()[:1] == [ip] for line in lines):
        return
    _write_in_place(hosts, "".join(f"{line}\n" for line in [*lines, f"{ip}\t{hostname}"]))


def hosts_remove(sandbox_dir: Path, ip: str) -> None:
    """Drop the lines for an address the sandbox lost (network disconnect).  Blocking."""
    hosts = sandbox_dir / "hosts"
    try:
        lines = hosts.read_text().splitlines()
    except OSError:
        return
    kept = [line for line in lines if line.split()[:1] != [ip]]
    if ip and kept != lines:
        _write_in_place(hosts, "".join(f"{line}\n" for line in kept))


# moby's defaults when the host names no nameserver a container can reach (libnetwork/resolvconf).
DEFAULT_SERVERS = ("8.8.8.8", "8.8.4.4")
DEFAULT_SERVERS_V6 = ("2001:4860:4860::8888", "2001:4860:4860::8844")
# moby's /etc/hosts defaults (libnetwork/etchosts), not containerd CRI's.
DOCKER_HOSTS_DEFAULTS = (
    ("127.0.0.1", "localhost"),
    ("::1", "localhost ip6-localhost ip6-loopback"),
    ("fe00::0", "ip6-localnet"),
    ("ff00::0", "ip6-mcastprefix"),
    ("ff02::1", "ip6-allnodes"),
    ("ff02::2", "ip6-allrouters"),
)


def _host_nameservers(host_file: Path) -> tuple[str, ...]:
    try:
        lines = host_file.read_text().splitlines()
    except OSError:
        return ()
    return tuple(f[1] for f in (line.split() for line in lines) if len(f) >= 2 and f[0] == "nameserver")


def _is_loopback(server: str) -> bool:
    try:
        return ipaddress.ip_address(server.split("%", 1)[0]).is_loopback
    except ValueError:
        return True  # not an address: unusable too


def docker_dns_config(requested: DNSConfig | None, host_file: Path = HOST_RESOLV_CONF,
                      ipv6: bool = False) -> DNSConfig:
    """resolv.conf of a container on the default bridge (or none), as moby writes it: the host's, with the
    nameservers a container cannot reach (loopback ones, e.g. systemd-resolved's) dropped and Google's
    put in when none is left; --dns, --dns-search and --dns-option each replace their part (a search of
    "." means none).  Blocking read of ``host_file``."""
    host_searches, host_options = _host_search_and_options(host_file)
    servers = requested.servers if requested is not None and requested.servers else tuple(
        s for s in _host_nameservers(host_file) if not _is_loopback(s))
    if not servers:
        servers = DEFAULT_SERVERS + (DEFAULT_SERVERS_V6 if ipv6 else ())
    searches = requested.searches if requested is not None and requested.searches else host_searches
    options = requested.options if requested is not None and requested.options else host_options
    return DNSConfig(servers=servers, searches=tuple(s for s in searches if s != "."), options=options)


def docker_hosts(hostname: str, domainname: str, ips: Iterable[str], extra: Iterable[tuple[str, str]] = ()) -> str:
    """A container's /etc/hosts as moby writes it: its defaults, the --add-host entries, then one line per
    address of the container naming its hostname (``host.domain host`` with a domain name)."""
    names = f"{hostname}.{domainname} {hostname}" if domainname else hostname
    lines = [f"{ip}\t{n}" for ip, n in DOCKER_HOSTS_DEFAULTS]
    lines += [f"{ip}\t{n}" for ip, n in extra]
    lines += [f"{ip}\t{names}" for ip in ips if ip and hostname]
    return "".join(line + "\n" for line in lines)


def write_in_place(path: Path, content: str) -> None:
    """Replace a sandbox file's content keeping its inode (containers may bind-mount it already).  Blocking."""
    with open(path, "w") as f:
        f.write(content)
