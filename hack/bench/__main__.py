"""`make bench`: Narwhal side by side with what users would pick instead, same machine, same run.

Starts a local registry (busybox, a locally built pause image, a ~100 MB multi-layer image), then one
system after another, each set up here and torn down before the next (hack/bench/anchors.py):
narwhald (CRI and Docker API), containerd 1.6 with its CRI plugin, Debian's dockerd.  Writes the
table into docs/benchmarks.md, the raw samples to docs/bench/results.json and plots to docs/bench/.

    .venv/bin/python hack/bench                # the full run (under 10 minutes on 2 cores)
    .venv/bin/python hack/bench --smoke --out /tmp/x   # a couple of iterations, no dockerd, no plots
    .venv/bin/python hack/bench/logs.py        # narwhal-logger against `cat` (throughput micro-benchmark)
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(HERE), str(REPO / "test"), str(REPO / "hack"), str(REPO)]

import anchors  # noqa: E402
import build_bench  # noqa: E402
import cri_bench  # noqa: E402
import density  # noqa: E402
import docker_bench  # noqa: E402
import mkimage  # noqa: E402
import pull_bench  # noqa: E402
import report  # noqa: E402
import swarm_bench  # noqa: E402
from lib.registry import Registry, start_registry  # noqa: E402
from results import Results  # noqa: E402

SMOKE_CRI = cri_bench.CriPlan(pods=2, execs=2, concurrent=3, concurrent_rounds=1, log_mb=2, log_rounds=1, pulls=1,
                              rss_pods=2)
SMOKE_DOCKER = docker_bench.DockerPlan(runs=2, execs=2, ps_containers=3, ps_calls=2)
SMOKE_BUILD = build_bench.BuildPlan(builds=1, sleep=1)
SMOKE_DENSITY = density.DensityPlan(mem_pods=2, mem_pods_max=3, density_pods=3, density_rounds=1, cold_pulls=1)
BIG_LAYERS, BIG_LAYER_MB = 8, 12  # + busybox: ~100 MB in 9 layers


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def seed_registry(registry: Registry, smoke: bool) -> dict[str, str]:
    client = mkimage.RegistryClient(registry.host)
    client.push_image("library/busybox", "latest", mkimage.build("busybox"))
    # another image for `service update --image` (the swarm rows)
    client.push_image("library/busybox", "v2", mkimage.build("busybox", labels={"narwhal.bench": "v2"}))
    client.push_image("library/pause", "latest", mkimage.build("pause"))
    layers, size = (1, 1) if smoke else (BIG_LAYERS, BIG_LAYER_MB)
    client.push_image("bench/big", "latest", mkimage.build("busybox", filler_layers=layers, filler_mb=size))
    # The cold-pull image: five incompressible layers (20 MiB each) over the tiny pause layer.
    layers, size = (1, 1) if smoke else (density.COLD_LAYERS, density.COLD_LAYER_MB)
    client.push_image("bench/cold", "latest", mkimage.build("pause", filler_layers=layers, filler_mb=size))
    return {name: f"{registry.host}/{repo}:latest"
            for name, repo in (("busybox", "library/busybox"), ("pause", "library/pause"), ("big", "bench/big"),
                               ("cold", "bench/cold"))}


def _version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
        return out.splitlines()[0] if out else "?"
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a couple of iterations, no dockerd, no plots")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "bench", help="raw JSON and PNG plots")
    parser.add_argument("--doc", type=Path, help="markdown to update (default: docs/benchmarks.md; "
                        "with --smoke: <out>/benchmarks.md)")
    parser.add_argument("--only", choices=["cri", "docker", "swarm", "density", "pull"],
                        help="run one group only (density: memory per pod, 50 pods at once, the cold pull; "
                        "pull: the two PullImage rows alone, with CPU seconds and containerd calls per pull)")
    parser.add_argument("--no-dockerd", action="store_true", help="skip the dockerd anchor")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=N",
                        help="override a plan field (CriPlan/DockerPlan in cri_bench.py/docker_bench.py), e.g. pods=10")
    parser.add_argument("--narwhal-config", action="append", default=[], metavar="KEY=VALUE",
                        help="a narwhald config key for this run, e.g. pods-per-shim=8 (the table's header names it)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("benchmarks need root (containerd, runc, CNI)")
    # narwhald runs from this checkout (a git worktree too), whatever the venv's editable install points at.
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    doc = args.doc or (args.out / "benchmarks.md" if args.smoke else REPO / "docs" / "benchmarks.md")
    cri_plan = SMOKE_CRI if args.smoke else cri_bench.CriPlan()
    docker_plan = SMOKE_DOCKER if args.smoke else docker_bench.DockerPlan()
    build_plan = SMOKE_BUILD if args.smoke else build_bench.BuildPlan()
    swarm_plan = swarm_bench.SwarmPlan()
    density_plan = SMOKE_DENSITY if args.smoke else density.DensityPlan()
    pull_plan = pull_bench.PullPlan(pull_rounds=1) if args.smoke else pull_bench.PullPlan()
    for item in args.set:
        key, _, value = item.partition("=")
        if key in cri_plan.__dataclass_fields__:
            cri_plan = dataclasses.replace(cri_plan, **{key: int(value)})
        elif key in docker_plan.__dataclass_fields__:
            docker_plan = dataclasses.replace(docker_plan, **{key: int(value)})
        elif key in build_plan.__dataclass_fields__:
            build_plan = dataclasses.replace(build_plan, **{key: int(value)})
        elif key in swarm_plan.__dataclass_fields__:
            swarm_plan = dataclasses.replace(swarm_plan, **{key: int(value)})
        elif key in density_plan.__dataclass_fields__:
            density_plan = dataclasses.replace(density_plan, **{key: int(value)})
        elif key in pull_plan.__dataclass_fields__:
            pull_plan = dataclasses.replace(pull_plan, **{key: int(value)})
        else:
            parser.error(f"--set {item}: no such plan field")
    want_cri, want_docker = args.only in (None, "cri"), args.only in (None, "docker")
    want_swarm = args.only in (None, "swarm") and not args.smoke  # minutes per round: not in the smoke run
    want_density = args.only in (None, "density")
    want_pull = args.only == "pull"  # the full run has these rows in its CRI and density groups
    with_dockerd = (want_docker or want_swarm) and not args.smoke and not args.no_dockerd

    results = Results()
    if want_cri:
        cri_bench.declare(results, cri_plan)
    if want_density:
        density.declare(results, density_plan)
    if want_pull:
        pull_bench.declare(results, pull_plan)
    if want_docker:
        docker_bench.declare(results, docker_plan)
        build_bench.declare(results, build_plan)
    if want_swarm:
        swarm_bench.declare(results, swarm_plan)
    started = time.monotonic()
    log("seeding the registry")
    registry = start_registry()
    try:
        images = seed_registry(registry, args.smoke)
        with contextlib.ExitStack() as stack:
            log("narwhal")
            extra = "".join(f"{k}: {v}\n" for k, _, v in (o.partition("=") for o in args.narwhal_config))
            narwhal = stack.enter_context(anchors.narwhal(registry, extra))
            if want_cri:
                cri_bench.record_idle_rss(narwhal, results)
            if want_cri or want_density or want_pull:
                log("containerd (CRI plugin)")
                with anchors.containerd_cri(registry) as containerd:
                    if want_cri:
                        cri_bench.record_idle_rss(containerd, results)
                    # Density first: its memory rows take a baseline and the growth over the pods, and a Go daemon
                    # holds the garbage of earlier work (the CRI group's pulls) until a later GC cycle, which the
                    # pods' starts then trigger: a run with the CRI group first read -58 MiB of "growth" over 10 pods.
                    if want_density:
                        log("density benchmarks")
                        density.run([narwhal, containerd], images, density_plan, results, log)
                    if want_cri:
                        log("CRI benchmarks")
                        cri_bench.run([narwhal, containerd], images, cri_plan, results, log)
                    if want_pull:
                        log("pull benchmarks")
                        pull_bench.run([narwhal, containerd], images, pull_plan, results, log)
            if want_docker or want_swarm:
                systems = [narwhal]
                if with_dockerd:
                    if not anchors.dockerd_available():
                        log("installing docker.io (Debian) for the dockerd anchor")
                        anchors.install_dockerd()
                    log("dockerd")
                    systems.append(stack.enter_context(anchors.dockerd(registry)))
            if want_docker:
                log("Docker benchmarks")
                docker_bench.run(systems, docker_plan, results, log)
                log("build benchmarks")
                build_bench.run(systems, build_plan, results, log)
            if want_swarm:
                log("swarm benchmarks")
                swarm_bench.run(systems, swarm_plan, results, log)
    finally:
        registry.stop()

    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "host": f"{platform.node()} {platform.release()}",
        "cpus": os.cpu_count(),
        "mode": "smoke" if args.smoke else "full",
        "duration_s": time.monotonic() - started,
        "versions": ", ".join([
            "narwhal " + _version(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]),
            _version(["containerd", "--version"]).replace("github.com/containerd/containerd ", ""),
            _version(["runc", "--version"]),
            _version(["dockerd", "--version"]) if with_dockerd else "dockerd not run",
        ]) + "".join(f", narwhald {o}" for o in args.narwhal_config),
        "plans": {"cri": cri_plan.__dict__, "density": density_plan.__dict__, "docker": docker_plan.__dict__,
                  "build": build_plan.__dict__, "swarm": swarm_plan.__dict__, "pull": pull_plan.__dict__},
    }
    report.write_json(args.out / "results.json", results, meta)
    table = report.markdown(results, meta)
    report.update_doc(doc, table)
    if not args.smoke:
        for path in report.plots(args.out, results.rows):
            log(f"wrote {path}")
    print(table)
    log(f"done in {meta['duration_s']:.0f} s; wrote {args.out / 'results.json'} and {doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
