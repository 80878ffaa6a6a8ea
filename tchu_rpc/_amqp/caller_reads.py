"""The client's loop: a caller waiting alone for its reply reads the connection itself.

Waking a caller from the I/O thread costs two thread hand-overs per reply (the wake-up, then the
GIL back). So a caller whose call is the only one in flight serves the
connection itself until its outcome arrives (`lead`), while the I/O thread parks off the socket, and
stays parked for a moment after (`_LINGER`), so that back-to-back calls of one thread do not wake it.
Two threads must never wait on the socket together: the one that did not read would sleep on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from tchu_rpc._amqp.loop import Loop
from tchu_rpc.log import get_logger

logger = get_logger(__name__)

#: After a caller led the connection (see `lead`), the I/O thread stays off the socket this
#: long, so that back-to-back calls of one thread do not wake it for every reply.
_LINGER = 0.2
#: How long a caller waits for the connection to become free before it leaves the reading to the
#: I/O thread.
_LEAD_WAIT = 0.005
#: The longest the I/O thread stays parked before it looks again.
_PARK_MAX = 1.0


class LeadingLoop(Loop):
    """A `Loop` whose waiting callers may read the connection themselves (`lead`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._leader: threading.Thread | None = None  # a caller reading its own reply
        self._linger_until = 0.0
        self._parked = False

    def lead(self, done: Callable[[], bool]) -> None:
        """Serve the connection on this thread until `done()`, if it is up, idle and led by no one.

        A caller waiting for its own reply reads it itself instead of being woken by the I/O thread:
        two thread hand-overs fewer per call. Meanwhile the I/O thread stays off the socket (`_park`).
        The lead ends when `done()`, or when the connection fails (the I/O thread then drops it); if
        other work still wants the connection then, the I/O thread takes over at once.
        """
        conn = self.connection
        if (
            conn is None
            or self._leader is not None
            or self.socket is None
            # Held for a moment while the I/O thread reads (a confirm, say), else held by no one.
            or not self._io_lock.acquire(timeout=_LEAD_WAIT)
        ):
            self.resume()
            return
        if self._leader is not None or done():  # led by another caller, or answered, meanwhile
            self._io_lock.release()
            self.resume()
            return
        self._leader = threading.current_thread()
        generation = self.generation
        try:
            while not done() and self.connection is conn and not self._stop.is_set():
                self._turn(done)
        except Exception as exc:
            self.fail(generation, exc)  # the I/O thread drops the connection (and logs why)
            logger.debug("lead_ended_by_failure", loop=self.name, error=str(exc))
        finally:
            self._leader = None
            idle = self._failure is None and not self._wants_connection()
            self._linger_until = time.monotonic() + _LINGER if idle else 0.0
            self._io_lock.release()
            if not idle or self._stop.is_set():
                self.wake()  # the I/O thread takes over (or stops), parked or not

    def resume(self) -> None:
        """Make sure the I/O thread reads the socket now (it may be parked after a lead)."""
        if self._parked and self._leader is None:
            self.wake()

    def _park(self) -> bool:
        # Stay off the socket while a caller leads, and for a moment after (see `lead`). Parked is
        # set before the conditions are read: a caller that adds work and then sees it unset knows
        # the I/O thread will see that work.
        self._parked = True
        try:
            wait = self._parking_time()
            if wait is None:
                return False
            self._io_lock.release()
            try:
                self._wakeup.wait(wait)
            finally:
                self._io_lock.acquire()
        finally:
            self._parked = False
        conn = self.connection
        if conn is not None:
            self._check(conn)
            self._run_commands()
        return True

    def _parking_time(self) -> float | None:
        """Return how long the I/O thread may stay off the socket, or None if it must serve it."""
        if self._leader is not None:
            return _PARK_MAX  # the leader serves the connection, heartbeats included
        now = time.monotonic()
        until = self._linger_until
        if self.settings.heartbeat:
            until = min(until, self._next_heartbeat)
        if now >= until or self._commands or self._wants_connection():
            return None
        return min(until - now, _PARK_MAX)

    def _yields_socket(self) -> bool:
        return self._leader not in (None, threading.current_thread())  # the reading is the leader's
