"""Finding and removing the iptables state CNI plugins leave for a container.

The reference plugins tag what they create per container with a comment
naming the network and the container id (bridge's ipMasq chain ``CNI-<hash>``:
``name: "<net>" id: "<id>"``; portmap's ``CNI-DN-<hash>``: ``dnat name: ...``),
and the firewall plugin adds untagged ``-s/-d <pod IP>`` rules to the shared
``CNI-FORWARD`` chain.  After a crash (or a DEL whose netns was already gone,
when bridge cannot learn the IPs to unmasquerade) these are what remains; this
module removes them, for one network name only, so another instance's or
another runtime's rules are never touched.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import shlex
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

TABLES = ("nat", "filter")
RUN_TIMEOUT = 60.0
FIREWALL_CHAIN = "CNI-FORWARD"
SHARED_CHAINS = ("CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-SNAT", "CNI-HOSTPORT-MASQ", "CNI-HOSTPORT-SETMARK", FIREWALL_CHAIN)
_TAG = re.compile(r'(?:dnat )?name: "(?P<net>[^"]*)" id: "(?P<id>[^"]*)"')


@dataclass
class Rule:
    chain: str
    args: list[str]

    def comment(self) -> str:
        if "--comment" in self.args:
            i = self.args.index("--comment")
            if i + 1 < len(self.args):
                return self.args[i + 1]
        return ""

    def target(self) -> str:
        for flag in ("-j", "--jump", "-g", "--goto"):
            if flag in self.args:
                i = self.args.index(flag)
                if i + 1 < len(self.args):
                    return self.args[i + 1]
        return ""

    def tag(self) -> tuple[str, str] | None:
        m = _TAG.search(self.comment())
        return (m["net"], m["id"]) if m else None


@dataclass
class Table:
    name: str
    chains: list[str] = field(default_factory=list)
    rules: list[Rule] = field(default_factory=list)


def parse_save(text: str) -> dict[str, Table]:
    """``iptables-save`` output → tables with their chains and rules."""
    tables: dict[str, Table] = {}
    current: Table | None = None
    for line in text.splitlines():
        if line.startswith("*"):
            current = tables.setdefault(line[1:].strip(), Table(line[1:].strip()))
        elif current is None:
            continue
        elif line.startswith(":"):
            current.chains.append(line[1:].split()[0])
        elif line.startswith("-A "):
            try:
                parts = shlex.split(line)
            except ValueError:
                continue
            current.rules.append(Rule(chain=parts[1], args=parts[2:]))
    return tables


async def run(*argv: str) -> tuple[int, str, str]:
    """Run one iptables command, bounded: a stuck xtables lock must not wedge teardown or GC."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), RUN_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return -1, "", f"{argv[0]} did not finish within {RUN_TIMEOUT:g}s"
    return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")


def families() -> list[tuple[str, str]]:
    """(iptables, iptables-save) pairs installed on this host."""
    pairs = []
    for cmd, save in (("iptables", "iptables-save"), ("ip6tables", "ip6tables-save")):
        if shutil.which(cmd) and shutil.which(save):
            pairs.append((cmd, save))
    return pairs


async def snapshot(save: str, names: tuple[str, ...] = TABLES) -> dict[str, Table]:
    tables: dict[str, Table] = {}
    for table in names:
        rc, out, _ = await run(save, "-t", table)
        if rc == 0:
            tables.update(parse_save(out))
    return tables


def plan(
    tables: dict[str, Table], network: str, is_orphan: Callable[[str], bool],
    orphan_ips: Callable[[str], bool] | None = None,
) -> tuple[list[tuple[str, Rule]], list[tuple[str, str]]]:
    """What to delete: rules (table, rule) and then chains (table, chain).

    A ``CNI-*`` chain is an orphan when it holds rules tagged for ``network`` and
    every tag names an orphaned container id.  Rules jumping to an orphan chain,
    rules tagged with an orphaned id, and (when ``orphan_ips`` is given) the
    firewall plugin's ``CNI-FORWARD`` rules for orphaned pod IPs go first.
    """
    rules: list[tuple[str, Rule]] = []
    chains: list[tuple[str, str]] = []
    for table in tables.values():
        table_rules, orphan_chains = _plan_table(table, network, is_orphan, orphan_ips)
        rules.extend((table.name, r) for r in table_rules)
        chains.extend((table.name, c) for c in sorted(orphan_chains))
    return rules, chains


def _plan_table(
    table: Table, network: str, is_orphan: Callable[[str], bool], orphan_ips: Callable[[str], bool] | None,
) -> tuple[list[Rule], set[str]]:
    tags_by_chain: dict[str, list[tuple[str, str]]] = {}
    for rule in table.rules:
        tag = rule.tag()
        if tag is not None:
            tags_by_chain.setdefault(rule.chain, []).append(tag)

    def orphan_tag(tag: tuple[str, str] | None) -> bool:
        return tag is not None and tag[0] == network and is_orphan(tag[1])

    # A per-container chain: its own rules are tagged (bridge's ipMasq chain), or only the
    # rule jumping to it is (portmap's CNI-DN-* chain, jumped to from CNI-HOSTPORT-DNAT).
    candidates = set(tags_by_chain)
    candidates.update(r.target() for r in table.rules if orphan_tag(r.tag()) and r.target())
    orphan_chains = {
        chain for chain in candidates
        if chain.startswith("CNI-") and chain in table.chains and chain not in SHARED_CHAINS
        and all(orphan_tag(t) for t in tags_by_chain.get(chain, []))
    }
    rules: list[Rule] = []
    for rule in table.rules:
        if rule.chain in orphan_chains:
            continue  # flushed with its chain
        if rule.target() in orphan_chains or orphan_tag(rule.tag()):
            rules.append(rule)
        elif orphan_ips is not None and table.name == "filter" and rule.chain == FIREWALL_CHAIN:
            ip = _firewall_rule_ip(rule)
            if ip and orphan_ips(ip):
                rules.append(rule)
    return rules, orphan_chains


def _firewall_rule_ip(rule: Rule) -> str:
    """The pod IP of a firewall plugin rule (``-s IP -j ACCEPT`` / ``-d IP ... -j ACCEPT``)."""
    if rule.target() != "ACCEPT":
        return ""
    for flag in ("-s", "-d"):
        if flag in rule.args:
            i = rule.args.index(flag)
            if i + 1 < len(rule.args):
                try:
                    iface = ipaddress.ip_interface(rule.args[i + 1])
                except ValueError:
                    return ""
                if iface.network.prefixlen == iface.max_prefixlen:
                    return str(iface.ip)
    return ""


async def cleanup(
    network: str, is_orphan: Callable[[str], bool], orphan_ips: Callable[[str], bool] | None = None,
    tables_to_scan: tuple[str, ...] = TABLES,
) -> int:
    """Remove the orphaned per-container iptables state of ``network``; how many rules and chains."""
    removed = 0
    for cmd, save in families():
        tables = await snapshot(save, tables_to_scan)
        rules, chains = plan(tables, network, is_orphan, orphan_ips)
        for table, rule in rules:
            rc, _, err = await run(cmd, "-w", "-t", table, "-D", rule.chain, *rule.args)
            if rc == 0:
                removed += 1
            elif "does not exist" not in err and "No chain" not in err:
                log.warning("%s: delete rule in %s/%s: %s", cmd, table, rule.chain, err.strip())
        for table, chain in chains:
            await run(cmd, "-w", "-t", table, "-F", chain)
            rc, _, err = await run(cmd, "-w", "-t", table, "-X", chain)
            if rc == 0:
                removed += 1
            elif "No chain" not in err and "does not exist" not in err:
                log.warning("%s: delete chain %s/%s: %s", cmd, table, chain, err.strip())
    return removed
