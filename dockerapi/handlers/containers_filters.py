"""The ``filters`` of GET /containers/json and POST /containers/prune (moby's filters.Args)."""
from __future__ import annotations

from collections.abc import Callable

from dockerapi import filters as docker_filters
from dockerapi.backends import ContainerBackend
from dockerapi.filters import Filters
from pkg import errors, goregexp
from pkg.docker.engine.model import EngineContainer, Status

Predicate = Callable[[EngineContainer], bool]

LIST_KEYS = {"id", "name", "label", "status", "exited", "ancestor", "before", "since", "volume", "network",
             "publish", "expose", "health", "isolation", "is-task"}
PRUNE_KEYS = {"until", "label", "label!"}


def _search(pattern: str, text: str) -> bool:
    """Go regexp semantics in linear time (pkg.goregexp); an invalid pattern matches as a substring."""
    found = goregexp.search(pattern, text)
    return pattern in text if found is None else found


def _port_filter(values: list[str]) -> Callable[[int, str], bool]:
    ranges = []
    for value in values:
        ports, _, proto = value.partition("/")
        start, _, end = ports.partition("-")
        if not (start.isascii() and start.isdigit()) or end and not (end.isascii() and end.isdigit()):
            raise errors.InvalidArgument(f"invalid filter: unable to parse port {value!r}")
        ranges.append((int(start), int(end or start), proto or "tcp"))
    return lambda port, proto: any(lo <= port <= hi and p == proto for lo, hi, p in ranges)


def matcher(filters: Filters, engine: ContainerBackend) -> Predicate:
    """One predicate for all filters (parsed with LIST_KEYS): keys AND together, values of one key OR together
    (label: AND)."""
    checks: list[Predicate] = []
    if "id" in filters:
        checks.append(lambda c: any(_search(v, c.id) for v in filters["id"]))
    if "name" in filters:
        checks.append(lambda c: any(_search(v, "/" + c.name) for v in filters["name"]))
    if "label" in filters:
        checks.append(lambda c: docker_filters.labels_match(c.config.labels, filters["label"]))
    if "status" in filters:
        known = {s.value for s in Status}
        for value in filters["status"]:
            if value not in known:
                raise errors.InvalidArgument(f"invalid filter 'status={value}'")
        checks.append(lambda c: c.status.value in filters["status"])
    if "exited" in filters:
        try:
            codes = {int(v) for v in filters["exited"]}
        except ValueError:
            raise errors.InvalidArgument(f"invalid filter 'exited={filters['exited'][0]}'") from None
        checks.append(lambda c: c.status == Status.EXITED and c.core.exit_code in codes)
    if "ancestor" in filters:
        checks.append(lambda c: any(_is_ancestor(v, c) for v in filters["ancestor"]))
    if "before" in filters:
        before = engine.get(filters["before"][0]).created
        checks.append(lambda c: c.created < before)
    if "since" in filters:
        since = engine.get(filters["since"][0]).created
        checks.append(lambda c: c.created > since)
    if "volume" in filters:
        checks.append(lambda c: any(m.name in filters["volume"] or m.source in filters["volume"]
                                    or m.destination in filters["volume"] for m in c.record.mount_points))
    if "network" in filters:
        checks.append(lambda c: any(n.name in filters["network"] for n in c.networks)
                      or c.host_config.network_mode in filters["network"])
    if "publish" in filters:
        published = _port_filter(filters["publish"])
        checks.append(lambda c: any(published(b.container_port, b.protocol) for b in c.record.port_bindings))
    if "expose" in filters:
        exposed = _port_filter(filters["expose"])
        checks.append(lambda c: any(exposed(int(p.partition("/")[0]), p.partition("/")[2])
                                    for p in c.config.exposed_ports)
                      or any(exposed(b.container_port, b.protocol) for b in c.record.port_bindings))
    if "health" in filters:
        for value in filters["health"]:
            if value not in ("starting", "healthy", "unhealthy", "none"):
                raise errors.InvalidArgument(f"Unrecognised filter value for health: {value}")
        checks.append(lambda c: (c.health.status.value if c.health is not None else "none") in filters["health"])
    if "isolation" in filters:
        checks.append(lambda c: any(v in ("default", "") for v in filters["isolation"]))
    if "is-task" in filters:
        checks.append(lambda c: "false" in filters["is-task"])
    if not checks:
        return lambda c: True  # docker ps without filters: no generator per container
    if len(checks) == 1:
        return checks[0]
    return lambda c: all(check(c) for check in checks)


def _is_ancestor(value: str, c: EngineContainer) -> bool:
    image_id = c.image_id.removeprefix("sha256:")
    wanted = value.removeprefix("sha256:")
    if len(wanted) >= 12 and image_id.startswith(wanted):
        return True
    names = {c.config.image, _tagged(c.config.image)}
    return value in names or _tagged(value) in names


def _tagged(ref: str) -> str:
    if "@" in ref or ":" in ref.rsplit("/", 1)[-1]:
        return ref
    return f"{ref}:latest"


def prune_keeper(filters: Filters) -> Predicate:
    """True for the stopped containers prune must keep (filters parsed with PRUNE_KEYS: ``until``, ``label``,
    ``label!``)."""
    cutoff = docker_filters.until(filters)

    def keep(c: EngineContainer) -> bool:
        if cutoff is not None and c.created / 1e9 >= cutoff:
            return True
        return not docker_filters.labels_selected(filters, c.config.labels)
    return keep
