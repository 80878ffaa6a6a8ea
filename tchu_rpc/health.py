"""Worker health for probes: live while its I/O thread turns, ready while it consumes; over HTTP.

`Worker.probe()` answers for one worker. A supervisor's processes each report theirs on a `Board`
(shared memory), and `serve()` answers `GET /livez` and `GET /readyz` (200 or 503, with a JSON body)
for all of them: live unless one is stuck, ready once every one consumes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from http.server import ThreadingHTTPServer

#: Seconds without a turn of a worker's I/O thread (it turns at least once a second) before it is
#: taken for stuck: heartbeats are not sent, deliveries not read.
STALL_LIMIT = 10.0
_REPORT_EVERY = 0.5
_ROW = 3  # a board's row: reported at (time.time(); 0 = nothing yet), live, ready


@dataclass(frozen=True, slots=True)
class Probe:
    """A worker's health: `live` (restart it if not), `ready` (send it work), and why not."""

    live: bool
    ready: bool
    reason: str = ""


class Board:
    """Where each process of a supervisor reports its worker's probe (shared memory, a row each)."""

    def __init__(self, context: Any, processes: int) -> None:
        self._rows = context.RawArray("d", _ROW * processes)
        self._processes = processes

    def clear(self, slot: int) -> None:
        """Forget the report of `slot` (its process is starting anew)."""
        self._rows[_ROW * slot] = 0.0

    def report(self, slot: int, probe: Probe) -> None:
        """Record `probe` for `slot` (in the process of that slot)."""
        base = _ROW * slot
        self._rows[base + 1], self._rows[base + 2] = float(probe.live), float(probe.ready)
        self._rows[base] = time.time()

    def keep_reporting(self, slot: int, check: Callable[[], Probe]) -> None:
        """Report `check()` for `slot` twice a second, on a daemon thread, until the process ends."""

        def run() -> None:
            while True:
                self.report(slot, check())
                time.sleep(_REPORT_EVERY)

        threading.Thread(target=run, name="tchu-health-report", daemon=True).start()

    def probe(self, stall_limit: float = STALL_LIMIT) -> Probe:
        """Return the supervisor's probe: live unless a process is stuck, ready once all consume."""
        now, live, ready, reasons = time.time(), True, True, []
        for slot in range(self._processes):
            reported, slot_live, slot_ready = self._rows[_ROW * slot : _ROW * slot + _ROW]
            if not reported:
                ready = False  # starting: not ready, but not stuck either
                reasons.append(f"process {slot}: starting")
            elif now - reported > stall_limit or not slot_live:
                live = ready = False
                reasons.append(f"process {slot}: stuck")
            elif not slot_ready:
                ready = False
                reasons.append(f"process {slot}: not consuming")
        return Probe(live, ready, "; ".join(reasons))


def serve(port: int, check: Callable[[], Probe], host: str = "") -> ThreadingHTTPServer:
    """Answer `GET /livez` and `GET /readyz` on `port` from `check()`, on a daemon thread.

    Returns the server: `server.server_address` has the port (when `port` is 0), and
    `server.shutdown()` stops it.
    """
    from tchu_rpc._probe_http import serve_probes  # http.server only where probes are served

    return serve_probes(port, check, host)
