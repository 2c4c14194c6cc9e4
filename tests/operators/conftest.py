"""Operator tests at scale: imports from other tools, listings, feeds, and operator mistakes.

The CLI runner is the one of tests/core (``cli``: the real command group, an empty
config file, the test environment); ``store`` is a Store on a SQLite file in tmp_path;
``feed_server`` serves bytes over real HTTP (http.server in a thread).
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from newsletter.storage.store import Store
from tests.core.test_core_cli import cli  # noqa: F401  (the shared CLI fixture)

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path}/subs.sqlite")
    yield s
    s.dispose()


class FeedServer:
    """``serve(path, body, chunked=False)`` publishes bytes at http://127.0.0.1:PORT/path."""

    def __init__(self) -> None:
        self.pages: dict[str, tuple[bytes, bool]] = {}
        pages = self.pages

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                if self.path not in pages:
                    self.send_error(404)
                    return
                body, chunked = pages[self.path]
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
        self.pages[path] = (body, chunked)
        return self.base + path

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    server = FeedServer()
    yield server
    server.close()
