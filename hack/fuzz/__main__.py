"""`make fuzz` / `python hack/fuzz`: the long run of issue 15's fuzzing and abuse tests, with their figures.

Runs test/integration/test_security_fuzz.py and test_security_abuse.py with bigger budgets than `make test`
(more hypothesis examples per RPC and route, a 1 GiB line without newline, 200 clients), collects what each
suite reports and prints the table docs/security.md quotes: requests tried, crashes, 5xx, RSS peaks.

    python hack/fuzz [--examples N] [--log-bytes N] [--clients N] [--json OUT] [--schemathesis N]

--schemathesis N also runs test_security_schemathesis.py (every operation of moby's swagger.yaml) with N
examples per operation; --schemathesis-only skips the other modules.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULES = ["test/integration/test_security_fuzz.py", "test/integration/test_security_abuse.py"]
SCHEMATHESIS = "test/integration/test_security_schemathesis.py"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=150, help="hypothesis examples per RPC and per route")
    parser.add_argument("--log-bytes", type=int, default=1 << 30, help="the line without newline, in bytes")
    parser.add_argument("--clients", type=int, default=200, help="concurrent Docker API clients")
    parser.add_argument("--json", type=Path, help="also write the collected reports here")
    parser.add_argument("--schemathesis", type=int, default=0, metavar="N",
                        help="also run schemathesis over moby's swagger.yaml, N examples per operation")
    parser.add_argument("--schemathesis-only", action="store_true", help="run only the schemathesis module")
    args = parser.parse_args()
    with tempfile.NamedTemporaryFile(prefix="narwhal-fuzz-", suffix=".jsonl", delete=False) as f:
        report = Path(f.name)
    env = dict(os.environ, NARWHAL_FUZZ_EXAMPLES=str(args.examples), NARWHAL_ABUSE_LOG_BYTES=str(args.log_bytes),
               NARWHAL_ABUSE_CLIENTS=str(args.clients), NARWHAL_FUZZ_REPORT=str(report),
               NARWHAL_SCHEMATHESIS_EXAMPLES=str(args.schemathesis or 150))
    modules = [] if args.schemathesis_only else list(MODULES)
    if args.schemathesis or args.schemathesis_only:
        modules.append(SCHEMATHESIS)
    proc = subprocess.run([str(ROOT / ".venv/bin/python"), "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-o", "timeout=7200", *modules], cwd=ROOT, env=env)
    rows = [json.loads(line) for line in report.read_text().splitlines() if line.strip()]
    report.unlink()
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return proc.returncode


def table(rows: list[dict[str, object]]) -> str:
    out = ["| suite | requests / load | crashes (UNKNOWN/INTERNAL/500) | other 5xx | narwhald RSS peak (growth) |",
           "| --- | --- | --- | --- | --- |"]
    for row in rows:
        suite = str(row.get("suite"))
        if suite in ("cri", "docker", "schemathesis"):
            codes = row.get("codes") or row.get("statuses") or {}
            assert isinstance(codes, dict)
            fives = sum(int(n) for code, n in codes.items() if str(code).startswith("5"))
            out.append(f"| {suite} fuzz | {row['requests']} | {row['failures']} | {fives} | |")
        else:
            load = {k: v for k, v in row.items() if k not in ("suite", "rss_growth_mib", "rss_peak_mib")}
            out.append(f"| {suite} | {json.dumps(load)} | 0 | 0 | {row.get('rss_peak_mib')} MiB "
                       f"(+{row.get('rss_growth_mib')} MiB) |")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
