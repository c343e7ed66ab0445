"""The local stack's HTTP server: a client that goes away is no traceback; other errors are."""

from __future__ import annotations

import logging
import socket
import struct
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from tweetgen_local.http_server import LocalHTTPServer

from tests.conftest import eventually


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/fail":
            raise ValueError("a bug in a handler")
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[LocalHTTPServer]:
    server = LocalHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _url(server: LocalHTTPServer, path: str) -> str:
    host, port = server.server_address[:2]
    return f"http://{host!s}:{port}{path}"


def _reset_mid_request(server: LocalHTTPServer) -> None:
    """Send half a request line, then close with a reset (SO_LINGER 0), as a client that
    gives up does."""
    host, port = server.server_address[:2]
    client = socket.create_connection((str(host), int(port)))
    client.sendall(b"GET /slow")
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()


def test_a_client_that_resets_is_logged_at_debug_not_printed(
    server: LocalHTTPServer, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="tweetgen_local.http_server")
    _reset_mid_request(server)
    eventually(lambda: any("went away" in r.getMessage() for r in caplog.records), timeout=5)
    assert "Traceback" not in capfd.readouterr().err
    # The server goes on answering.
    with urllib.request.urlopen(_url(server, "/"), timeout=5) as answer:
        assert answer.read() == b"ok"


def test_any_other_error_is_still_printed(
    server: LocalHTTPServer, capfd: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ConnectionError):  # the server closes without an answer
        urllib.request.urlopen(_url(server, "/fail"), timeout=5)
    printed = ""

    def traceback_printed() -> bool:
        nonlocal printed
        printed += capfd.readouterr().err
        return "ValueError: a bug in a handler" in printed

    eventually(traceback_printed, timeout=5)
    assert "Traceback" in printed


def test_every_server_of_the_local_stack_is_one() -> None:
    """The stack's servers (AWS APIs, the model server's REST API, the web UI, custom
    resources) all start from LocalHTTPServer, not from http.server's own."""
    import tweetgen_local

    package = Path(tweetgen_local.__file__).parent
    direct = [
        path.name
        for path in package.glob("*.py")
        if path.name != "http_server.py" and "ThreadingHTTPServer" in path.read_text("utf-8")
    ]
    assert direct == []
    servers = [path.name for path in package.glob("*.py") if "LocalHTTPServer" in path.read_text()]
    assert len(servers) >= 6  # this module and the five servers
