"""``narwhald``: command-line flags, config file, logging, and the daemon's lifetime."""
from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

from pkg import config as config_mod
from pkg.errors import InvalidArgument

FLAGS: list[tuple[str, str]] = [
    ("root", "persistent state (containerd content and snapshots, metadata) [/var/lib/narwhal]"),
    ("state", "runtime state (sockets, containerd state, netns) [/run/narwhal]"),
    ("cri-socket", "CRI gRPC unix socket [/run/narwhal/cri.sock]"),
    ("docker-socket", "Docker API unix socket [/run/narwhal/docker.sock]"),
    ("metrics-address", "HOST:PORT for Prometheus /metrics [127.0.0.1:9323]"),
    ("streaming-address", "HOST:PORT of the Exec/Attach/PortForward streaming server; port 0 = any [127.0.0.1:0]"),
    ("containerd-address", "use this existing containerd socket instead of starting one"),
    ("cni-bin-dir", "CNI plugin dirs, ':'-separated [/usr/lib/cni:/opt/cni/bin]"),
    ("cni-conf-dir", "CNI network config dir [/etc/cni/net.d]"),
    ("log-level", "debug, info, warning or error [info]"),
    ("containerd-namespace", "containerd namespace for this instance's objects [narwhal]"),
    ("stop-containerd-on-exit", "stop the owned containerd on a clean shutdown (true/false) [false]"),
    ("pod-subnet", "subnet(s) of the default CNI network, ','-separated, one per IP family [a /24 of 10.123/16]"),
    ("cni-bridge", "bridge of the default CNI network [nw-<instance id>]"),
    ("cni-timeout", "seconds a CNI plugin call may take before it is killed [60]"),
    ("docker-min-api-version", "oldest Docker API version served [1.40]"),
]


def parse_args(argv: list[str] | None) -> config_mod.Config:
    parser = argparse.ArgumentParser(
        prog="narwhald",
        description="Narwhal: a Kubernetes CRI runtime with a Docker API facade, on containerd.",
    )
    parser.add_argument("--config", type=Path, help="YAML file; its keys are these flags' names")
    for name, help_text in FLAGS:
        parser.add_argument(f"--{name}", dest=name.replace("-", "_"), help=help_text)
    args = parser.parse_args(argv)
    flags: dict[str, Any] = {name: getattr(args, name.replace("-", "_")) for name, _ in FLAGS}
    try:
        file_values = config_mod.load_file(args.config) if args.config else {}
        return config_mod.build(file_values, flags)
    except InvalidArgument as exc:
        parser.exit(2, f"narwhald: {exc.message}\n")


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("aiohttp.access", "pyroute2"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


def main(argv: list[str] | None = None) -> None:
    cfg = parse_args(argv)
    setup_logging(cfg.log_level)
    from narwhal.daemon import Daemon, run  # late: keep --help fast and free of grpc imports

    try:
        asyncio.run(run(Daemon(cfg)))
    except KeyboardInterrupt:
        pass
    except Exception as exc:  # noqa: BLE001 - last resort: one clear line, no traceback spam
        from pkg.errors import NarwhalError

        if isinstance(exc, NarwhalError):
            sys.exit(f"narwhald: {exc.message}")
        raise


if __name__ == "__main__":
    main()
