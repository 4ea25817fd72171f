"""An HTTP relay in front of a test registry that holds back one blob (a config) until another blob (a
layer) is asked for, to observe the order in which a pull requests its blobs."""
from __future__ import annotations

import http.client
import http.server
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "upgrade"}


@dataclass
class GateProxy:
    target: tuple[str, int]
    held: str  # the blob digest answered only once another blob was requested (or after ``patience`` s)
    patience: float = 15.0
    until: Callable[[], bool] | None = None  # and also held until this holds (polled), within ``patience``
    others_first: bool = False  # whether another blob was requested while ``held`` was being held
    released_by_until: bool = False
    _other: threading.Event = field(default_factory=threading.Event)
    _server: http.server.ThreadingHTTPServer | None = None

    @property
    def host(self) -> str:
        assert self._server is not None
        return f"127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> GateProxy:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                self._relay()

            def do_GET(self) -> None:
                self._relay()

            def _relay(self) -> None:
                if "/blobs/" in self.path:
                    if self.path.endswith(proxy.held):
                        deadline = time.monotonic() + proxy.patience
                        proxy.others_first = proxy._other.wait(proxy.patience)
                        while proxy.until is not None and time.monotonic() < deadline:
                            if proxy.until():
                                proxy.released_by_until = True
                                break
                            time.sleep(0.05)
                    else:
                        proxy._other.set()
                upstream = http.client.HTTPConnection(*proxy.target, timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP | {"host"}}
                    upstream.request(self.command, self.path, headers=headers)
                    resp = upstream.getresponse()
                    self.send_response(resp.status)
                    for k, v in resp.getheaders():
                        if k.lower() not in HOP:
                            self.send_header(k, v)
                    self.end_headers()
                    while self.command != "HEAD" and (chunk := resp.read(1 << 16)):
                        self.wfile.write(chunk)
                finally:
                    upstream.close()

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
