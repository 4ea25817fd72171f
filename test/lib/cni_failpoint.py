"""A CNI plugin for failure tests (like containerd's cni-bridge-fp): fails or hangs on demand.

Its network config says what to do per command::

    {"type": "failpoint", "fail": {"ADD": {"code": 7, "msg": "...", "details": "..."}},
     "hang": ["ADD"], "pidFile": "/tmp/x.pid", "exitWith": {"ADD": 3}}

It answers VERSION like a real plugin and, on success, passes prevResult on.
Install it with ``install(bin_dir)``; it runs under this interpreter.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

SUPPORTED = ["0.3.0", "0.3.1", "0.4.0", "1.0.0"]


def install(bin_dir: Path, name: str = "failpoint") -> Path:
    """Write an executable plugin named ``name`` into ``bin_dir``."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    path = bin_dir / name
    path.write_text(f"#!{sys.executable}\n" + Path(__file__).read_text())
    path.chmod(0o755)
    return path


def main() -> None:
    command = os.environ.get("CNI_COMMAND", "")
    conf = json.loads(sys.stdin.read() or "{}")
    if command == "VERSION":
        print(json.dumps({"cniVersion": conf.get("cniVersion", "1.0.0"), "supportedVersions": SUPPORTED}))
        return
    if conf.get("pidFile"):
        Path(conf["pidFile"]).write_text(str(os.getpid()))
    if command in conf.get("hang", []):
        while True:
            time.sleep(60)
    failure = (conf.get("fail") or {}).get(command)
    if failure:
        print(json.dumps({"cniVersion": conf.get("cniVersion", "1.0.0"), **failure}))
        sys.exit(1)
    status = (conf.get("exitWith") or {}).get(command)
    if status is not None:
        sys.stderr.write(f"failpoint: exiting with {status}\n")
        sys.exit(int(status))
    if command == "ADD":
        print(json.dumps(conf.get("prevResult") or {"cniVersion": conf.get("cniVersion"), "ips": []}))


if __name__ == "__main__":
    main()
