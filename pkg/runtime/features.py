"""What each runtime handler can do, as the CRI Status reports it (``runtime_handlers[].features``).

kubelet only sends recursive read-only mounts or user-namespaced pods to a
handler that advertises them, so the answer has to be true: it comes from the
OCI runtime's own ``<binary> features`` report (runc >= 1.1), asked once per
binary.  User namespaces stay off: narwhald does not map pod user namespaces.
"""
from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)

FEATURES_TIMEOUT = 10.0


@dataclass(frozen=True)
class HandlerFeatures:
    recursive_read_only_mounts: bool = False
    user_namespaces: bool = False


_cache: dict[str, HandlerFeatures] = {}


async def handler_features(binary: str) -> HandlerFeatures:
    """The features of the runc-compatible ``binary``; none when it cannot say (older runc, missing binary)."""
    cached = _cache.get(binary)
    if cached is not None:
        return cached
    features = HandlerFeatures()
    try:
        proc = await asyncio.create_subprocess_exec(
            binary, "features", stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        out, _ = await asyncio.wait_for(proc.communicate(), FEATURES_TIMEOUT)
        if proc.returncode == 0:
            report = json.loads(out)
            features = HandlerFeatures(recursive_read_only_mounts="rro" in (report.get("mountOptions") or []))
        else:
            log.warning("%s features exited with %s: assuming no optional features", binary, proc.returncode)
    except (OSError, TimeoutError, ValueError) as err:
        log.warning("%s features failed (%s): assuming no optional features", binary, err)
    _cache[binary] = features
    return features
