"""The worker's loop: the I/O thread runs a call handler itself, and a standby thread covers for it.

With one call thread, handing each call to a lane thread costs a hand-over per call. Instead the I/O
thread runs the handler after its reads (`defer`); while it does, the connection is free for other
threads (`run_or_submit`), and if the handler runs long a standby thread serves the connection in
its place: heartbeats, deliveries, timers, and, when the connection fails, the drop and the
reconnection with backoff. The I/O thread takes the connection back when the handler returns.
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

#: A deferred job: the connection generation it belongs to, the job, and what to do instead of
#: running it once that connection is gone.
_Deferred = tuple[int, Callable[[], None], Callable[[], None]]


class DeferringLoop(Loop):
    """A `Loop` that runs deferred jobs on its own thread, covered by a standby thread."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deferred: deque[_Deferred] = deque()
        self._away_since: float | None = None  # when the I/O thread left to run a deferred job
        self._last_away = 0.0  # when it last did
        self._standby: threading.Thread | None = None
        self._covering = False  # the standby serves the connection now

    def defer(self, job: Callable[[], None], skip: Callable[[], None]) -> None:
        """Run `job` on the I/O thread once this turn's reads are done, without the connection.

        For work that is usually short (a call handler): it then needs no hand-over to another
        thread. If the connection is dropped before `job` starts, `skip` runs instead (the broker
        redelivers what `job` was for). While it runs, the connection is free for other threads
        (`run_or_submit`), and if it runs longer than `_STANDBY_AFTER`, a standby thread serves the
        connection until it returns. Called on the I/O thread only.
        """
        self._deferred.append((self.generation, job, skip))
        if self._standby is None:
            self._standby = threading.Thread(target=self._stand_by, name=f"{self.name}-standby", daemon=True)
            self._standby.start()

    @property
    def away(self) -> bool:
        """Tell whether the I/O thread is away running a deferred job."""
        return self._away_since is not None

    def _run_deferred(self) -> None:
        while self._deferred:
            generation, job, skip = self._deferred.popleft()
            if generation != self.generation or self.connection is None:
                skip()  # its delivery died with its connection
                continue
            self._away_since = self._last_away = time.monotonic()
            self._io_lock.release()
            try:
                job()
            finally:
                # Back: a covering standby hands over after its current step (it sees `away` unset),
                # woken from its wait for that.
                self._away_since = None
                if self._covering:
                    self.wake()
                self._io_lock.acquire()

    def _yield_now(self) -> bool:
        return not self.away and threading.current_thread() is self._standby

    def _stand_by(self) -> None:
        poll = _STANDBY_POLL
        while not self._stop.wait(poll):
            since, now = self._away_since, time.monotonic()
            idle = now - self._last_away > _STANDBY_IDLE_AFTER
            poll = _STANDBY_IDLE_POLL if idle else _STANDBY_POLL
            if since is None or now - since < _STANDBY_AFTER:
                continue
            with self._io_lock:
                # The I/O thread's whole job, reconnecting included, until it is back.
                self._covering = True
                try:
                    while self.away and not self._stop.is_set():
                        self._step()
                finally:
                    self._covering = False
                    if self._commands:
                        self.wake()  # submitted during its last turn, trusting it to run them
        if self.away:
            with self._io_lock:
                self._close()  # stopped while a handler runs on: its deliveries go back to the queue
