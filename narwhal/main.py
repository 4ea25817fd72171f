"""``narwhald``: command-line flags, config file, logging, and the daemon's lifetime."""
from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pkg import config as config_mod
from pkg import logsetup
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
    ("log-level", "debug, info, warning or error; SIGHUP re-reads it from --config [info]"),
    ("log-format", "text or json (one object per line) [text]"),
    ("containerd-namespace", "containerd namespace for this instance's objects [narwhal]"),
    ("stop-containerd-on-exit", "stop the owned containerd on a clean shutdown (true/false) [false]"),
    ("pod-subnet", "subnet(s) of the default CNI network, ','-separated, one per IP family [a /24 of 10.123/16]"),
    ("cni-bridge", "bridge of the default CNI network [nw-<instance id>]"),
    ("cni-timeout", "seconds a CNI plugin call may take before it is killed [60]"),
    ("image-pull-progress-timeout", "seconds a pull's download may go without receiving a byte before it is "
                                    "cut (resumed while it makes progress, else the pull fails) [60]"),
    ("docker-min-api-version", "oldest Docker API version served [1.40]"),
]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="narwhald",
        description="Narwhal: a Kubernetes CRI runtime with a Docker API facade, on containerd. "
        "SIGHUP reloads --config (log-level and log-format take effect at once).",
    )
    parser.add_argument("--config", type=Path, help="YAML file; its keys are these flags' names")
    for name, help_text in FLAGS:
        parser.add_argument(f"--{name}", dest=name.replace("-", "_"), help=help_text)
    return parser


def _config(args: argparse.Namespace) -> config_mod.Config:
    """Defaults < file < flags (InvalidArgument on a bad file or value)."""
    flags: dict[str, Any] = {name: getattr(args, name.replace("-", "_")) for name, _ in FLAGS}
    file_values = config_mod.load_file(args.config) if args.config else {}
    return config_mod.build(file_values, flags)


def parse_args(argv: list[str] | None) -> config_mod.Config:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return _config(args)
    except InvalidArgument as exc:
        parser.exit(2, f"narwhald: {exc.message}\n")


def reloader(argv: list[str] | None) -> Callable[[], config_mod.Config]:
    """Re-reads the config file with the same flags (flags still win), for SIGHUP."""
    args = _parser().parse_args(argv)
    return lambda: _config(args)


def setup_logging(level: str, fmt: str = "text") -> None:
    logsetup.setup(level, fmt, sys.stderr)


def main(argv: list[str] | None = None) -> None:
    cfg = parse_args(argv)
    setup_logging(cfg.log_level, cfg.log_format)
    from narwhal.daemon import Daemon, run  # late: keep --help fast and free of grpc imports

    try:
        asyncio.run(run(Daemon(cfg), reload=reloader(argv)))
    except KeyboardInterrupt:
        pass
    except Exception as exc:  # noqa: BLE001 - last resort: one clear line, no traceback spam
        from pkg.errors import NarwhalError

        if isinstance(exc, NarwhalError):
            sys.exit(f"narwhald: {exc.message}")
        raise


if __name__ == "__main__":
    main()
