"""Small real servers and waits that tests across packages share (no pytest import, so the
benchmarks in tests/bench can use them too).

- ``free_port()``: a TCP port free on 127.0.0.1 (``udp=True``: free for UDP as well);
- ``wait_until(check)``: poll until ``check()`` is truthy and return its value;
- ``FeedServer``: serves bytes over real HTTP (http.server in a thread), optionally holding
  each request until the test releases it. The ``feed_server`` fixture is in tests/conftest.py.
"""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def free_port(*, udp: bool = False) -> int:
    """A port nothing listens on at 127.0.0.1 now (TCP, and UDP too when asked).

    Another process may take it before the caller binds it: use it at once.
    """
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM) as first:
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            if not udp:
                return port
            with socket.socket() as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no port free for both UDP and TCP on 127.0.0.1")


def wait_until(check: Callable[[], T], timeout: float = 20.0, what: str = "the condition") -> T:
    """Call ``check`` every 50 ms until it returns something truthy, and return that;
    AssertionError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


class FeedServer:
    """``serve(path, body, chunked=False)`` publishes bytes at http://127.0.0.1:PORT/path.

    With ``held=True`` each request sets ``requested`` and waits (up to 30 s) for
    ``release`` before it is answered: a feed that hangs for as long as a test needs.
    """

    def __init__(self, *, held: bool = False) -> None:
        self.pages: dict[str, tuple[bytes, bool]] = {}
        self.requested = threading.Event()
        self.release = threading.Event()
        if not held:
            self.release.set()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                outer.requested.set()
                outer.release.wait(30)
                try:
                    self._answer()
                except OSError:
                    pass  # the client went away while the request was held

            def _answer(self) -> None:
                if self.path not in outer.pages:
                    self.send_error(404)
                    return
                body, chunked = outer.pages[self.path]
                self.send_response(200)
                self.send_header("Content-Type", "application/xml")
                if chunked:  # no Content-Length: only reading tells the size
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for start in range(0, len(body), 65536):
                        part = body[start : start + 65536]
                        self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                    self.wfile.write(b"0\r\n\r\n")
                    return
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def serve(self, path: str, body: bytes, *, chunked: bool = False) -> str:
        """Publish ``body`` at ``path``; returns its URL."""
        self.pages[path] = (body, chunked)
        return self.base + path

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
