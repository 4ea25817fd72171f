"""GET /events: the Docker domain's events from the daemon's bus, as moby streams them.

``since`` replays the bus's history ring first; ``until`` in the past returns
that history and closes, in the future ends the stream then.  Filters follow
moby's ``daemon/events/filter.go``: values of one key are ORed, keys are
ANDed; ``container``, ``network``, ``volume``, ... match an actor's ID or
name by prefix, ``image`` exactly (with or without its tag), ``label`` by
``key`` or ``key=value``.  A reader that falls behind the bus is cut off (the
stream ends) rather than slowing the daemon.
"""
from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from dockerapi import filters, times
from dockerapi.backend import backends, need
from dockerapi.backends import DockerEvent, Event
from pkg import errors

ACCEPTED_FILTERS = ("config", "container", "daemon", "event", "image", "label", "network", "node", "plugin",
                    "scope", "secret", "service", "type", "volume")
DISCONNECT_POLL = 1.0  # seconds between checks that an idle client is still there


# ---------------- matching (moby's events.Filter) ----------------
class EventFilter:
    def __init__(self, wanted: Mapping[str, list[str]]) -> None:
        self._f = wanted

    def _exact(self, key: str, value: str) -> bool:
        values = self._f.get(key)
        return not values or value in values

    def _fuzzy(self, key: str, value: str) -> bool:
        values = self._f.get(key)
        return not values or any(value.startswith(v) for v in values if v)

    def _fuzzy_name(self, key: str, event: DockerEvent) -> bool:
        return self._fuzzy(key, event.actor_id) or self._fuzzy(key, event.attributes.get("name", ""))

    def _labels(self, attributes: Mapping[str, str]) -> bool:
        return filters.labels_match(attributes, self._f.get("label", ()))

    def _image(self, event: DockerEvent) -> bool:
        if not self._f.get("image"):
            return True
        name = event.attributes.get("name" if event.type == "image" else "image", "")
        candidates = {event.actor_id, name, _strip_tag(event.actor_id), _strip_tag(name)}
        return any(c in self._f["image"] for c in candidates if c)

    def __call__(self, event: Event) -> bool:
        if not isinstance(event, DockerEvent):
            return False
        action = event.action
        return (
            (self._exact("event", action) or self._exact("event", action.split(":", 1)[0]))
            and self._exact("scope", event.scope)
            and self._exact("type", event.type)
            and self._fuzzy_name("daemon", event)
            and self._fuzzy_name("container", event)
            and self._image(event)
            and self._labels(event.attributes)
            and self._fuzzy_name("volume", event)
            and self._fuzzy_name("network", event)
            and self._fuzzy_name("plugin", event)
            and self._fuzzy_name("service", event)
            and self._fuzzy_name("node", event)
            and self._fuzzy_name("secret", event)
            and self._fuzzy_name("config", event)
        )


def _strip_tag(ref: str) -> str:
    """``busybox:1.36`` -> ``busybox`` (a registry port is not a tag)."""
    name, _, _digest = ref.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


# ---------------- the JSON ----------------
def message(event: DockerEvent) -> dict[str, Any]:
    """moby's events.Message, with the deprecated status/id/from it still fills for containers and images."""
    msg: dict[str, Any] = {}
    if event.type in ("container", "image"):
        msg["status"] = event.action
        msg["id"] = event.actor_id
        if event.type == "container" and event.attributes.get("image"):
            msg["from"] = event.attributes["image"]
    msg.update(
        Type=event.type,
        Action=event.action,
        Actor={"ID": event.actor_id, "Attributes": dict(event.attributes)},
        scope=event.scope,
        time=event.time_ns // 1_000_000_000,
        timeNano=event.time_ns,
    )
    return msg


# ---------------- the handler ----------------
async def get_events(request: web.Request) -> web.StreamResponse:
    bus = need(backends(request).events, "the event bus")
    query = request.query
    now = time.time_ns()
    since = times.timestamp(query["since"], now) if query.get("since") else None
    until = times.timestamp(query["until"], now) if query.get("until") else None
    if since is not None and until is not None and until < since:
        raise errors.InvalidArgument("`since` time must be before `until`")
    match = EventFilter(filters.parse(query.get("filters"), ACCEPTED_FILTERS))

    def in_window(event: DockerEvent) -> bool:
        return (since is None or event.time_ns >= since) and (until is None or event.time_ns <= until)

    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    async with bus.subscribe(match) as subscription:
        # No await between subscribing and reading the history: nothing is missed or repeated.
        replay = [e for e in bus.history(match, since or 0) if in_window(e)] if since is not None or until else []
        await response.prepare(request)
        for event in replay:
            if not await _send(response, event):
                return response
        if until is not None and until <= time.time_ns():
            return response
        while True:
            timeout = DISCONNECT_POLL
            if until is not None:
                timeout = min(timeout, max(0.0, (until - time.time_ns()) / 1e9))
            try:
                got: Event = await asyncio.wait_for(subscription.get(), timeout)
            except TimeoutError:
                if (until is not None and time.time_ns() >= until) or _gone(request):
                    return response
                continue
            except errors.ResourceExhausted:
                return response  # cut off: the client sees the stream end and may reconnect with ?since
            assert isinstance(got, DockerEvent)
            if until is not None and got.time_ns > until:
                return response
            if since is not None and got.time_ns < since:
                continue  # a `since` in the future: nothing before it
            if not await _send(response, got):
                return response


async def _send(response: web.StreamResponse, event: DockerEvent) -> bool:
    """False when the client has gone away."""
    try:
        await response.write(json.dumps(message(event)).encode() + b"\n")
    except (ConnectionResetError, ConnectionError):
        return False
    return True


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


ROUTES = [
    ("GET", "/events", get_events),
]
