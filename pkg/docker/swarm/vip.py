"""Service VIPs on overlay networks: the virtual address balanced over the service's tasks.

Moby load-balances a VIP with IPVS inside every container's sandbox; this kernel has no IPVS, so the
same place gets nat rules instead: a chain ``NARWHAL-VIP`` in each local sandbox's netns (jumped to
from OUTPUT) DNATs a new connection to a VIP to one of the task addresses, round robin (``statistic
nth``), ports unchanged.  Done in the client's own namespace, conntrack there turns the replies back
into the VIP's, wherever the task runs (no SNAT, no hairpin through a node).

The VIP itself is an address of the network's etcd IPAM owned by ``vip:<service id>`` (no node), with
the service name as its DNS name; the leader claims one for each service in ``vip`` endpoint mode on
each of its networks and gives it back when the service goes.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

from pkg import errors
from pkg.cni.netns import run_in_netns

CHAIN = "NARWHAL-VIP"
OWNER_PREFIX = "vip:"
TIMEOUT = 30.0

Plan = dict[str, tuple[str, ...]]  # VIP -> task addresses


def rules(plan: Plan) -> str:
    """iptables-restore input for the chain (applied with --noflush: only our chain is replaced)."""
    lines = ["*nat", f":{CHAIN} - [0:0]"]
    for vip, targets in sorted(plan.items()):
        for index, target in enumerate(targets):
            left = len(targets) - index
            nth = f"-m statistic --mode nth --every {left} --packet 0 " if left > 1 else ""
            lines.append(f"-A {CHAIN} -d {vip}/32 {nth}-j DNAT --to-destination {target}")
    lines += ["COMMIT", ""]
    return "\n".join(lines)


def _run(argv: list[str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=TIMEOUT, check=False)


def _apply(plan: Plan) -> None:
    """Blocking, on a thread inside the netns."""
    done = _run(["iptables-restore", "-w", "--noflush"], rules(plan))
    if done.returncode != 0:
        raise errors.Internal(f"iptables-restore in the sandbox: {done.stderr.strip()}")
    jump = ["OUTPUT", "-j", CHAIN]
    if _run(["iptables", "-w", "-t", "nat", "-C", *jump]).returncode != 0:
        added = _run(["iptables", "-w", "-t", "nat", "-A", *jump])
        if added.returncode != 0:
            raise errors.Internal(f"iptables in the sandbox: {added.stderr.strip()}")


async def install(netns_path: Path, plan: Plan) -> None:
    """Make the sandbox's VIP chain exactly ``plan``."""
    try:
        await run_in_netns(netns_path, lambda: _apply(plan))
    except (OSError, subprocess.SubprocessError) as exc:
        raise errors.Internal(f"service VIPs in {netns_path}: {exc}") from None
