"""`make bench`: run every benchmark script in hack/bench (or the ones named: `make bench ARGS=logs`)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    names = sys.argv[1:] or sorted(p.stem for p in HERE.glob("*.py") if not p.stem.startswith("_"))
    failed = 0
    for name in names:
        script = HERE / f"{name}.py"
        if not script.exists():
            print(f"no benchmark {name!r} in {HERE}", file=sys.stderr)
            return 2
        print(f"== {name}", flush=True)
        failed |= subprocess.run([sys.executable, str(script)], check=False).returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
