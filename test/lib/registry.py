"""A local OCI registry (Debian's docker-registry) on 127.0.0.1, free port, temp storage."""
from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from lib.daemon import free_port

BINARY = "/usr/bin/docker-registry"


@dataclass
class Registry:
    base: Path
    port: int
    proc: subprocess.Popen[bytes]
    htpasswd: Path | None = None

    address: str = "127.0.0.1"

    @property
    def host(self) -> str:
        return f"{self.address}:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.base, ignore_errors=True)


def start_registry(users: dict[str, str] | None = None, address: str = "127.0.0.1") -> Registry:
    """Start a registry; with ``users`` it requires HTTP basic auth (bcrypt htpasswd).  ``address`` is the one
    it listens on (the cluster test bed's bridge address, so nodes in their namespaces reach it)."""
    base = Path(tempfile.mkdtemp(prefix="nw-reg-"))
    port = free_port(address)
    auth = ""
    htpasswd = None
    if users:
        htpasswd = base / "htpasswd"
        lines = []
        for user, password in users.items():
            out = subprocess.run(["htpasswd", "-Bbn", user, password], check=True, capture_output=True, text=True)
            lines.append(out.stdout.strip())
        htpasswd.write_text("\n".join(lines) + "\n")
        auth = f"auth:\n  htpasswd:\n    realm: narwhal-test\n    path: {htpasswd}\n"
    config = base / "config.yml"
    config.write_text(
        f"""version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {base}/data
  delete:
    enabled: true
http:
  addr: {address}:{port}
{auth}"""
    )
    with open(base / "registry.log", "wb") as log:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen([BINARY, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://{address}:{port}/v2/", timeout=1)
            break
        except urllib.error.HTTPError:
            break  # 401 with auth on: it is up
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError((base / "registry.log").read_text()) from None
            time.sleep(0.1)
    else:
        proc.kill()
        raise TimeoutError("registry did not start")
    return Registry(base=base, port=port, proc=proc, htpasswd=htpasswd, address=address)
