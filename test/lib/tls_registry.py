"""A registry serving HTTPS with a self-signed certificate (for the ``registry.insecure`` path)."""
from __future__ import annotations

import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from lib.daemon import free_port
from lib.registry import BINARY, Registry


def start_tls_registry(storage: Path) -> Registry:
    """HTTPS on 127.0.0.1 (self-signed), serving ``storage`` (another registry's ``base/data``)."""
    base = Path(tempfile.mkdtemp(prefix="nw-tlsreg-"))
    cert, key = base / "tls.crt", base / "tls.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    port = free_port()
    config = base / "config.yml"
    config.write_text(f"""version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {storage}
http:
  addr: 127.0.0.1:{port}
  tls:
    certificate: {cert}
    key: {key}
""")
    with open(base / "registry.log", "wb") as log:
        proc = subprocess.Popen([BINARY, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=log)
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"https://127.0.0.1:{port}/v2/", timeout=1, context=insecure)
            break
        except urllib.error.HTTPError:
            break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError((base / "registry.log").read_text()) from None
            time.sleep(0.1)
    else:
        proc.kill()
        raise TimeoutError("TLS registry did not start")
    return Registry(base=base, port=port, proc=proc)
