"""GET /containers/{id}/stats: Docker's stats JSON, one object (``stream=false``) or one per second."""
from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from dockerapi import times
from dockerapi.handlers.attach import containers, lookup
from dockerapi.params import query_bool
from pkg import errors
from pkg.docker.views.stats import BlkioEntry, Sample, sample

INTERVAL = 1.0  # moby's collector period


def _cpu(s: Sample | None) -> dict[str, Any]:
    cpu = s.cgroup.cpu if s is not None and s.cgroup is not None else None
    if s is None or cpu is None:
        return {"cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
                "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}}
    usage: dict[str, Any] = {
        "total_usage": cpu.usage_core_nano_seconds,
        "usage_in_kernelmode": cpu.system_nano_seconds or 0,
        "usage_in_usermode": cpu.user_nano_seconds or 0,
    }
    if cpu.per_cpu_nano_seconds:
        usage["percpu_usage"] = list(cpu.per_cpu_nano_seconds)
    return {
        "cpu_usage": usage,
        "system_cpu_usage": s.system_cpu_ns,
        "online_cpus": s.online_cpus,
        "throttling_data": {"periods": cpu.periods, "throttled_periods": cpu.throttled_periods,
                            "throttled_time": cpu.throttled_nano_seconds},
    }


def _memory(s: Sample) -> dict[str, Any]:
    memory = s.cgroup.memory if s.cgroup is not None else None
    if memory is None:
        return {}
    out: dict[str, Any] = {"usage": memory.usage_bytes, "stats": dict(memory.stat),
                           "limit": memory.limit_bytes or s.host_memory}
    if memory.max_usage_bytes is not None:
        out["max_usage"] = memory.max_usage_bytes
    return out


def _blkio(entries: tuple[BlkioEntry, ...]) -> list[dict[str, Any]] | None:
    if not entries:
        return None
    return [{"major": e.major, "minor": e.minor, "op": e.op, "value": e.value} for e in entries]


def render(s: Sample, previous: Sample | None, container_id: str, name: str) -> dict[str, Any]:
    pids = s.cgroup.pids if s.cgroup is not None else None
    body: dict[str, Any] = {
        "read": times.rfc3339_fixed(s.read_ns) if s.cgroup is not None else times.ZERO_TIME,
        "preread": (times.rfc3339_fixed(previous.read_ns) if previous is not None and previous.cgroup
                    else times.ZERO_TIME),
        "pids_stats": ({"current": pids.current, **({"limit": pids.limit} if pids.limit else {})}
                       if pids is not None else {}),
        "blkio_stats": {
            "io_service_bytes_recursive": _blkio(s.io_service_bytes),
            "io_serviced_recursive": _blkio(s.io_serviced),
            "io_queue_recursive": None, "io_service_time_recursive": None, "io_wait_time_recursive": None,
            "io_merged_recursive": None, "io_time_recursive": None, "sectors_recursive": None,
        },
        "num_procs": 0,
        "storage_stats": {},
        "cpu_stats": _cpu(s),
        "precpu_stats": _cpu(previous),
        "memory_stats": _memory(s),
        "name": name,
        "id": container_id,
    }
    if s.networks:
        body["networks"] = {
            iface: {"rx_bytes": n.rx_bytes, "rx_packets": n.rx_packets, "rx_errors": n.rx_errors,
                    "rx_dropped": n.rx_dropped, "tx_bytes": n.tx_bytes, "tx_packets": n.tx_packets,
                    "tx_errors": n.tx_errors, "tx_dropped": n.tx_dropped}
            for iface, n in sorted(s.networks.items())
        }
    return body


async def stats(request: web.Request) -> web.StreamResponse:
    found = lookup(request, request.match_info["id"])
    container_id, name = found.id, "/" + found.name.lstrip("/")
    stream = query_bool(request, "stream", default=True)
    one_shot = query_bool(request, "one-shot")
    if one_shot and stream:
        raise errors.InvalidArgument("cannot have stream=true and one-shot=true")
    service = containers(request)
    if not stream:
        first = await sample(service, container_id)
        previous = None
        if not one_shot and first.cgroup is not None:
            await asyncio.sleep(INTERVAL)  # a second sample, so clients can compute CPU %
            previous, first = first, await sample(service, container_id)
        return web.json_response(render(first, previous, container_id, name))
    response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    await response.prepare(request)
    previous = None
    try:
        while service.ctx.containers.find(container_id) is not None:
            current = await sample(service, container_id)
            line = json.dumps(render(current, previous, container_id, name)) + "\n"
            await response.write(line.encode())
            previous = current
            await asyncio.sleep(INTERVAL)
        await response.write_eof()
    except ConnectionError:
        pass  # the client stopped reading (docker stats interrupted)
    return response


ROUTES = [
    ("GET", "/containers/{id}/stats", stats),
]
