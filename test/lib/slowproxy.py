"""A throttling TCP proxy on 127.0.0.1, to make a pull slow enough to interrupt, or to cut its streams."""
from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field


@dataclass
class SlowProxy:
    target: tuple[str, int]
    bytes_per_second: int
    port: int = 0
    cut_after: int = 0  # > 0: close a connection after exactly this many bytes back...
    cuts: int = 0  # ...for this many connections that get that far
    _listener: socket.socket | None = None
    _closed: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> SlowProxy:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _should_cut(self, carried: int) -> bool:
        with self._lock:
            if self.cut_after and self.cuts > 0 and carried >= self.cut_after:
                self.cuts -= 1
                return True
            return False

    def _pump(self, src: socket.socket, dst: socket.socket, throttle: bool) -> None:
        chunk = max(1024, self.bytes_per_second // 20)
        carried = 0
        try:
            while not self._closed.is_set():
                data = src.recv(chunk)
                if not data:
                    break
                if throttle and self._should_cut(carried + len(data)):
                    # Exactly ``cut_after`` bytes go through, and the cut is counted before the close: a client
                    # that reads the whole of a longer stream has to come back, and when it is done, ``cuts``
                    # already says so (a count taken after a last whole chunk raced the client's finish).
                    dst.sendall(data[:self.cut_after - carried])
                    break
                dst.sendall(data)
                carried += len(data)
                if throttle:
                    time.sleep(len(data) / self.bytes_per_second)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def stop(self) -> None:
        self._closed.set()
        if self._listener is not None:
            self._listener.close()
