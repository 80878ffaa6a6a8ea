"""The worker's loop: the I/O thread runs a call handler itself, and a standby thread covers for it.

With one call thread, handing each call to a lane thread costs a hand-over per call. Instead the I/O
thread runs the handler after its reads (`defer`); while it does, the connection is free for other
threads (`run_or_submit`), and if the handler runs long a standby thread serves the connection
(heartbeats, deliveries, timers) until it returns.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from tchu_rpc._amqp.loop import Loop

#: A standby thread looks this often whether the I/O thread is away running a deferred job ...
_STANDBY_POLL = 0.01
#: ... and serves the connection once that job has run this long.
_STANDBY_AFTER = 0.05
#: Once no job has started for this long, it looks less often (an idle worker wakes less).
_STANDBY_IDLE_AFTER = 1.0
_STANDBY_IDLE_POLL = 0.1


class DeferringLoop(Loop):
    """A `Loop` that runs deferred jobs on its own thread, covered by a standby thread."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deferred: deque[Callable[[], None]] = deque()
        self._away_since: float | None = None  # when the I/O thread left to run a deferred job
        self._last_away = 0.0  # when it last did
        self._standby: threading.Thread | None = None

    def defer(self, job: Callable[[], None]) -> None:
        """Run `job` on the I/O thread once this turn's reads are done, without the connection.

        For work that is usually short (a call handler): it then needs no hand-over to another
        thread. While it runs, the connection is free for other threads (`run_or_submit`), and if it
        runs longer than `_STANDBY_AFTER`, a standby thread serves the connection (heartbeats,
        deliveries, timers) until it returns. Called on the I/O thread only.
        """
        self._deferred.append(job)
        if self._standby is None:
            self._standby = threading.Thread(target=self._stand_by, name=f"{self.name}-standby", daemon=True)
            self._standby.start()

    @property
    def away(self) -> bool:
        """Tell whether the I/O thread is away running a deferred job."""
        return self._away_since is not None

    def _run_deferred(self) -> None:
        while self._deferred:
            job = self._deferred.popleft()
            self._away_since = self._last_away = time.monotonic()
            self._io_lock.release()
            try:
                job()
            finally:
                self._io_lock.acquire()  # after the standby's current turn, if it took over
                self._away_since = None

    def _stand_by(self) -> None:
        poll = _STANDBY_POLL
        while not self._stop.wait(poll):
            since, now = self._away_since, time.monotonic()
            idle = now - self._last_away > _STANDBY_IDLE_AFTER
            poll = _STANDBY_IDLE_POLL if idle else _STANDBY_POLL
            if since is None or now - since < _STANDBY_AFTER:
                continue
            with self._io_lock:
                while self.away and self.connection is not None and not self._stop.is_set():
                    if self._failure is not None:
                        break
                    try:
                        self._turn()
                    except Exception as exc:  # the I/O thread drops the connection when it is back
                        self._failure = exc
