"""Docker's trick for 127.0.0.11:53: the server listens on random ports and a NAT rule inside the
container's network namespace sends port 53 there.

Binding 127.0.0.11:53 itself would take port 53 from the container: a DNS server container (dnsmasq,
CoreDNS) binding 0.0.0.0:53 would then fail.  The rules live in a chain of their own in the netns's nat
table (``NARWHAL-DNS``, jumped to from OUTPUT for 127.0.0.11), rewritten whole on each start so a
restarted narwhald's new ports replace the old ones; conntrack turns the replies back into port 53.
iptables runs on a thread that joined the netns (its child inherits the namespace): no nsenter needed.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from pkg import errors
from pkg.cni.netns import run_in_netns

CHAIN = "NARWHAL-DNS"
RUN_TIMEOUT = 30.0


def rules(address: str, udp_port: int, tcp_port: int) -> str:
    """iptables-restore input (applied with --noflush: only our chain is replaced)."""
    return "\n".join([
        "*nat",
        f":{CHAIN} - [0:0]",
        f"-A {CHAIN} -d {address}/32 -p udp -m udp --dport 53 -j DNAT --to-destination {address}:{udp_port}",
        f"-A {CHAIN} -d {address}/32 -p tcp -m tcp --dport 53 -j DNAT --to-destination {address}:{tcp_port}",
        "COMMIT",
        "",
    ])


def _run(argv: list[str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False)


def _apply(address: str, udp_port: int, tcp_port: int) -> None:
    """Blocking, on a thread inside the netns."""
    done = _run(["iptables-restore", "-w", "--noflush"], rules(address, udp_port, tcp_port))
    if done.returncode != 0:
        raise errors.Internal(f"iptables-restore in the sandbox: {done.stderr.strip()}")
    jump = ["OUTPUT", "-d", f"{address}/32", "-j", CHAIN]
    if _run(["iptables", "-w", "-t", "nat", "-C", *jump]).returncode != 0:
        added = _run(["iptables", "-w", "-t", "nat", "-A", *jump])
        if added.returncode != 0:
            raise errors.Internal(f"iptables in the sandbox: {added.stderr.strip()}")


def available() -> bool:
    return shutil.which("iptables-restore") is not None and shutil.which("iptables") is not None


async def install(netns_path: Path, address: str, udp_port: int, tcp_port: int) -> None:
    """Send ``address``:53 (UDP and TCP) to the given ports inside the namespace at ``netns_path``."""
    try:
        await run_in_netns(netns_path, lambda: _apply(address, udp_port, tcp_port))
    except (OSError, subprocess.SubprocessError) as exc:
        raise errors.Internal(f"DNS redirect in {netns_path}: {exc}") from None
