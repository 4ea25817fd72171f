"""SIGHUP: reload the config file and apply what is safe to change in a running daemon (as dockerd).

Only the logging keys take effect at once; every other changed key is named
in a warning and waits for a restart (sockets, dirs, namespaces and networks
cannot move under live containers).  A file that no longer parses or
validates is refused as a whole and the running configuration stays.
"""
from __future__ import annotations

import dataclasses
import logging
import socket
from collections.abc import Callable

from pkg import errors, logsetup
from pkg.config import Config
from pkg.events import EventBus

log = logging.getLogger("narwhal")

RELOADABLE = ("log_level", "log_format")


def reload(current: Config, load: Callable[[], Config], bus: EventBus | None = None) -> Config:
    """The configuration to run with from now on (``current`` when the new one is refused)."""
    try:
        new = load()
    except errors.NarwhalError as exc:
        log.error("reload refused: %s; keeping the running configuration", exc.message)
        return current
    changed = [f.name for f in dataclasses.fields(Config) if getattr(new, f.name) != getattr(current, f.name)]
    logsetup.set_format(new.log_format)
    logsetup.set_level(new.log_level)
    later = [name.replace("_", "-") for name in changed if name not in RELOADABLE]
    if later:
        log.warning("reload: %s changed; restart narwhald to apply", ", ".join(later))
    applied = [name.replace("_", "-") for name in changed if name in RELOADABLE]
    log.info("configuration reloaded%s", f": {', '.join(applied)}" if applied else " (no change applied)")
    result = dataclasses.replace(current, log_level=new.log_level, log_format=new.log_format)
    if bus is not None:
        bus.publish_docker("daemon", "reload", _daemon_id(current), {
            "name": socket.gethostname(), "log-level": result.log_level, "log-format": result.log_format})
    return result


def _daemon_id(cfg: Config) -> str:
    """The engine ID Docker's /info reports (pkg/system keeps it in <root>/engine-id), so that
    ``docker events --filter daemon=<ID>`` finds the reload; the instance ID until /info made one."""
    try:
        return (cfg.root / "engine-id").read_text().strip() or cfg.instance_id
    except OSError:
        return cfg.instance_id
