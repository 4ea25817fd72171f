"""A registry in token-auth mode, with a small token server (the distribution ``WWW-Authenticate`` flow).

The token server checks HTTP basic credentials and issues RS256 JWTs that the
registry verifies against a self-signed certificate (``x5c`` in the JWT
header).  Keys, certificate and signatures come from the ``openssl`` CLI, so
no crypto library is needed.  The registry can share storage with a plain one,
so tests push through the plain registry and pull through the token one.
"""
from __future__ import annotations

import base64
import json
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from lib.daemon import free_port
from lib.registry import BINARY, Registry

SERVICE = "narwhal-test-registry"
ISSUER = "narwhal-test-token-issuer"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class TokenServer:
    base: Path
    users: dict[str, str]
    port: int = 0
    issued: list[dict[str, object]] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    @property
    def cert(self) -> Path:
        return self.base / "token.crt"

    def start(self) -> None:
        key = self.base / "token.key"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                        "-out", str(self.cert), "-days", "2", "-subj", "/CN=narwhal-test-token"],
                       check=True, capture_output=True)
        der = subprocess.run(["openssl", "x509", "-in", str(self.cert), "-outform", "DER"],
                             check=True, capture_output=True).stdout
        x5c = base64.b64encode(der).decode()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server API
                url = urlparse(self.path)
                query = parse_qs(url.query)
                user = ""
                header = self.headers.get("Authorization", "")
                if header.startswith("Basic "):
                    user, _, password = base64.b64decode(header[6:]).decode().partition(":")
                    if server.users.get(user) != password:
                        self._reply(401, {"details": "wrong username or password"})
                        return
                access = []
                for scope in query.get("scope", []):
                    for item in scope.split(" "):
                        kind, _, rest = item.partition(":")
                        name, _, actions = rest.rpartition(":")
                        if kind == "repository" and user:
                            access.append({"type": kind, "name": name, "actions": actions.split(",")})
                now = int(time.time())
                claims = {"iss": ISSUER, "sub": user, "aud": query.get("service", [""])[0], "exp": now + 300,
                          "nbf": now - 10, "iat": now, "jti": secrets.token_hex(8), "access": access}
                head = {"typ": "JWT", "alg": "RS256", "x5c": [x5c]}
                signing_input = f"{_b64(json.dumps(head).encode())}.{_b64(json.dumps(claims).encode())}"
                signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(key)],
                                           input=signing_input.encode(), check=True, capture_output=True).stdout
                token = f"{signing_input}.{_b64(signature)}"
                server.issued.append(claims)
                self._reply(200, {"token": token, "access_token": token, "expires_in": 300})

            def _reply(self, status: int, body: dict[str, object]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


@dataclass
class TokenRegistry:
    registry: Registry
    tokens: TokenServer

    @property
    def host(self) -> str:
        return self.registry.host

    def stop(self) -> None:
        self.registry.proc.terminate()
        try:
            self.registry.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.registry.proc.kill()
        self.tokens.stop()
        shutil.rmtree(self.registry.base, ignore_errors=True)


def start_token_registry(users: dict[str, str], storage: Path) -> TokenRegistry:
    """A token-auth registry serving ``storage`` (another registry's ``base/data``)."""
    base = Path(tempfile.mkdtemp(prefix="nw-treg-"))
    tokens = TokenServer(base, users)
    tokens.start()
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
auth:
  token:
    realm: {tokens.realm}
    service: {SERVICE}
    issuer: {ISSUER}
    rootcertbundle: {tokens.cert}
""")
    with open(base / "registry.log", "wb") as log:
        proc = subprocess.Popen([BINARY, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1)
            break
        except urllib.error.HTTPError:
            break  # 401: it is up
        except OSError:
            if proc.poll() is not None:
                tokens.stop()
                raise RuntimeError((base / "registry.log").read_text()) from None
            time.sleep(0.1)
    else:
        proc.kill()
        tokens.stop()
        raise TimeoutError("token registry did not start")
    return TokenRegistry(Registry(base=base, port=port, proc=proc), tokens)
