"""``GET /containers/json`` (docker ps) as bytes: each container's summary encoded once, re-used until it changes.

docker ps over 100 containers spent most of narwhald's time building and encoding summaries that had not
changed since the last call (issue 21, round five: py-spy put ~70% of the handler in summary_json, the
engine's views and json.dumps).  A summary is made of what its record decides (replaced, never changed, by an
update: ``is`` tells a stale one), the container's state, the names other containers' links give it, its
networks (an IP once running), and the STATUS text, which is the only part that moves with the clock.  So
the JSON is kept encoded in two halves around ``"Status"``, keyed by those, and only the status text is
encoded per call.  The bytes are what ``summary_json`` gives, in the same key order.
"""
from __future__ import annotations

import json
from json.encoder import encode_basestring_ascii  # what json.dumps uses for a str

from dockerapi.handlers.containers_json import status_text, summary_json
from pkg.docker.engine.model import EngineContainer, EngineRecord, NetworkInfo

# What a summary's JSON depends on besides its record and the clock.
_Key = tuple[str, tuple[str, ...], tuple[NetworkInfo, ...]]
_ENCODED: dict[str, tuple[EngineRecord, _Key, bytes, bytes]] = {}
_ENCODED_MAX = 4096


def _encode(c: EngineContainer) -> tuple[bytes, bytes]:
    """The summary's JSON before and after the Status value: ``{...,"Status":`` and ``,...}``."""
    summary = summary_json(c, now=0.0)
    keys = list(summary)
    cut = keys.index("Status")
    head = {k: summary[k] for k in keys[:cut]}
    tail = {k: summary[k] for k in keys[cut + 1:]}
    return (json.dumps(head)[:-1] + ', "Status": ').encode(), (", " + json.dumps(tail)[1:]).encode()


def summary_bytes(c: EngineContainer, now: float) -> bytes:
    """``json.dumps(summary_json(c, now))``, from the halves kept for this container while they hold."""
    record = c.record
    key: _Key = (c.status.value, c.link_names, c.networks)
    kept = _ENCODED.get(record.id)
    if kept is not None and kept[0] is record and kept[1] == key:
        head, tail = kept[2], kept[3]
    else:
        head, tail = _encode(c)
        if len(_ENCODED) >= _ENCODED_MAX:  # entries of removed containers go in bulk
            _ENCODED.clear()
        _ENCODED[record.id] = (record, key, head, tail)
    return head + encode_basestring_ascii(status_text(c, now)).encode() + tail


def list_body(containers: list[EngineContainer], now: float) -> bytes:
    """The JSON array of these containers' summaries."""
    return b"[" + b", ".join(summary_bytes(c, now) for c in containers) + b"]"
