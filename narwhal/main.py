"""``narwhald``: command-line flags, config file, logging, and the daemon's lifetime.

``narwhald cleanup [--force] [--remove-dirs] FLAGS`` removes what the instance named by the same
flags (or ``--config``) left on the host (narwhal/cleanup.py).
"""
from __future__ import annotations

import argparse
import asyncio
import ctypes
import os
import resource
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
    ("docker-shows-pods", "the Docker API also lists and serves kubelet's containers, dockershim-named "
                          "(true/false) [false]"),
    ("docker-may-stop-pods", "with docker-shows-pods: docker stop/kill/rm may act on kubelet's containers "
                             "(true/false) [false]"),
    ("docker-images-for-pods", "image names made through the Docker API are also the CRI image store's, "
                               "content shared, not copied (true/false) [false]"),
    ("pods-per-shim", "CRI pods served by one runc v2 shim; one shim crash ends its group's pods (1-64) [10]"),
    ("shim-prestart", "start the pod's runc v2 shim during RunPodSandbox, beside the CNI chain "
                      "(true/false) [true]"),
    ("stream-unpack", "apply each pulled layer while it streams in, in narwhald, instead of containerd's "
                      "Diff.Apply after it (overlayfs, own containerd) (true/false) [true]"),
    ("containerd-gogc", "GOGC of the containerd narwhald starts, and of its shims and runc: lower keeps their "
                        "Go heaps smaller for more GC work (10-1000) [100]"),
    ("shim-direct", "a task's Start and its exec processes go straight to its runc v2 shim over ttrpc, "
                    "not through containerd's task service (own containerd) (true/false) [true]"),
    ("ingest-direct", "a pulled blob's bytes written and hashed by narwhald into containerd's ingest file, "
                      "then linked into its store, not relayed as Content.Write messages (own containerd) "
                      "(true/false) [true]"),
    ("log-service", "container output copied from fifos by one log service per instance instead of a "
                    "narwhal-logger process per container (true/false) [true]"),
    ("swarm-etcd-endpoints", "Swarm mode: external etcd endpoints (host:port, http:// or https://), "
                             "','-separated [own etcd member]"),
    ("swarm-etcd-ca-file", "Swarm mode, https:// external etcd: the CA certificate (PEM) to trust"),
    ("swarm-etcd-cert-file", "Swarm mode, https:// external etcd: the client certificate (PEM) narwhald presents"),
    ("swarm-etcd-key-file", "Swarm mode, https:// external etcd: that certificate's key (PEM)"),
]


CLEANUP = "cleanup"


def _parser(cleanup: bool = False) -> argparse.ArgumentParser:
    if cleanup:
        parser = argparse.ArgumentParser(
            prog="narwhald cleanup",
            description="Remove what a narwhald instance (named by the same flags or --config) made on the host: "
            "its bridges, firewall chains, CNI state, cgroup parents and mounts. Refuses while its narwhald "
            "or its containers run.",
        )
        parser.add_argument("--force", action="store_true", help="stop the instance's narwhald (SIGTERM) and "
                            "kill its containers first")
        parser.add_argument("--remove-dirs", action="store_true", help="also remove the root and state dirs")
    else:
        parser = argparse.ArgumentParser(
            prog="narwhald",
            description="Narwhal: a Kubernetes CRI runtime with a Docker API facade, on containerd. "
            "SIGHUP reloads --config (log-level and log-format take effect at once). "
            "`narwhald cleanup --help`: remove an instance's host state.",
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


def raise_nofile_limit() -> None:
    """Soft RLIMIT_NOFILE up to the hard limit (as Go programs do): containerd and the shims inherit it.

    The unit asks for LimitNOFILE=infinity; where narwhald runs without it (by hand, or where root lacks
    CAP_SYS_RESOURCE) the hard limit is the ceiling, never a reason to fail."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


# glibc's mallopt parameter for the arena cap (malloc.h); glibc's default is 8 per core.
M_ARENA_MAX = -8
MALLOC_ARENAS = 1


def cap_malloc_arenas(arenas: int = MALLOC_ARENAS) -> None:
    """At most ``arenas`` glibc malloc arenas in narwhald, set before any thread starts.

    Every thread that finds the arenas busy gets one of its own (up to 8 per core), which keeps what it freed:
    the default executor growing from 2 to 6 threads over the first pods, and grpc's threads, made narwhald
    grow ~1.1 MiB over its first 10 pods, ~0.55 MiB with one arena (docs/benchmarks.md, "Defaults"). Python's
    small objects do not use malloc (pymalloc, under the GIL) and glibc's per-thread cache serves small blocks
    without the arena's lock, so the threads seldom wait on the shared arena.
    An explicit MALLOC_ARENA_MAX in the environment wins; not glibc: nothing to do."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return
    try:
        ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, arenas)
    except (OSError, AttributeError):
        pass


def cleanup_main(argv: list[str]) -> None:
    parser = _parser(cleanup=True)
    args = parser.parse_args(argv)
    try:
        cfg = _config(args)
    except InvalidArgument as exc:
        parser.exit(2, f"narwhald cleanup: {exc.message}\n")
    setup_logging("warning" if cfg.log_level == "info" else cfg.log_level, cfg.log_format)
    from narwhal.cleanup import Cleanup
    from pkg.errors import NarwhalError

    try:
        asyncio.run(Cleanup(cfg, force=args.force, remove_dirs=args.remove_dirs).run())
    except NarwhalError as exc:
        sys.exit(f"narwhald cleanup: {exc.message}")


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == [CLEANUP]:
        cleanup_main(args[1:])
        return
    cfg = parse_args(argv)
    setup_logging(cfg.log_level, cfg.log_format)
    raise_nofile_limit()
    cap_malloc_arenas()  # before grpc's and the executor's threads exist
    from narwhal.daemon import Daemon, run  # late: keep --help fast and free of grpc imports
    from narwhal.notify import Notifier

    try:
        asyncio.run(run(Daemon(cfg, Notifier.from_env()), reload=reloader(argv)))
    except KeyboardInterrupt:
        pass
    except Exception as exc:  # noqa: BLE001 - last resort: one clear line, no traceback spam
        from pkg.errors import NarwhalError

        if isinstance(exc, NarwhalError):
            sys.exit(f"narwhald: {exc.message}")
        raise


if __name__ == "__main__":
    main()
