"""The HTTP face of `tchu_rpc.health`: `/livez` and `/readyz`, 200 or 503 with the probe as JSON."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tchu_rpc.health import Probe


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        probe = self.server.check()
        path = self.path.split("?", 1)[0]
        ok = {"/livez": probe.live, "/readyz": probe.ready}.get(path)
        body = json.dumps(asdict(probe)).encode()
        self.send_response(404 if ok is None else 200 if ok else 503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Log nothing: a probe every few seconds is not news (the base class writes to stderr)."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], check: Callable[[], Probe]) -> None:
        super().__init__(address, _Handler)
        self.check = check


def serve_probes(port: int, check: Callable[[], Probe], host: str = "") -> ThreadingHTTPServer:
    """Answer `GET /livez` and `GET /readyz` on `port` from `check()`, on a daemon thread."""
    server = _Server((host, port), check)
    threading.Thread(target=server.serve_forever, name="tchu-health-http", daemon=True).start()
    return server
