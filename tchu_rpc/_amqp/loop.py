"""The I/O thread: one thread owns one kombu connection; other threads hand it work.

A kombu connection is not thread-safe, and RabbitMQ's direct reply-to wants requests published on the
channel that consumes the replies. So each `Client` and `Worker` has one `Loop`: its thread connects,
reconnects with backoff, runs the commands other threads `submit`, drains the socket, and keeps
heartbeats flowing while handlers run elsewhere. It sleeps in `select()` on the socket and a wake-up
pipe, so a submitted command runs at once, not at the next poll.

A thread with something to publish publishes it itself while the I/O thread sleeps (`run_or_submit`),
which saves a thread hand-over on the hot path. A failure met on another thread is recorded for the
connection it happened on (its generation): it can never tear down a newer connection.
"""

from __future__ import annotations

import select
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from kombu import Connection

from tchu_rpc._amqp import internals
from tchu_rpc._amqp.connection import Hosts, open_connection
from tchu_rpc._amqp.reading import VirtualPoll, drain, has_buffered
from tchu_rpc._amqp.wakeup import WakeUp
from tchu_rpc.config import Settings
from tchu_rpc.errors import ConnectionLost
from tchu_rpc.log import get_logger, mask_url

logger = get_logger(__name__)

_IDLE_WAIT = 1.0


class Loop:
    """Own one connection in one thread; run submitted commands on it.

    `on_connect(conn)` sets up channels and consumers after each (re)connection; `on_lost(exc)` runs
    after the connection failed; `on_tick(now)` runs every turn and returns when it next needs to
    run. The loop connects, and reconnects with backoff, while `wants_connection()` says so.
    """

    def __init__(
        self,
        name: str,
        settings: Settings,
        *,
        on_connect: Callable[[Connection], None],
        on_lost: Callable[[BaseException], None],
        on_tick: Callable[[float], float | None] = lambda now: None,
        wants_connection: Callable[[], bool] = lambda: True,
    ) -> None:
        self.name = name
        self.settings = settings
        self.connection: Connection | None = None
        # py-amqp's connection and its socket (None on a virtual transport), kept per connection:
        self._amqp: Any = None  # each access through kombu verifies the connection again
        self.socket: Any = None
        self.fast = False  # this connection takes the fast path (`Settings.fast_path`, `internals`)
        self.generation = 0
        self._on_connect = on_connect
        self._on_lost = on_lost
        self._on_tick = on_tick
        self._wants_connection = wants_connection
        self._commands: deque[Callable[[], None]] = deque()
        # Held by the thread serving the connection but while it waits: another may use the idle
        self._io_lock = threading.Lock()  # connection itself (`run_or_submit`), not wake it
        # True while a thread in `_turn` is sure to run `_commands` before it next waits: a command
        # submitted then needs no wake-up through the pipe (two system calls and a turn).
        self._awake = False
        self._failure: tuple[int, BaseException] | None = None  # met off the I/O thread, by generation
        self._delay = settings.reconnect_delay  # the next pause between reconnection attempts
        self._urls = Hosts(settings.broker_url, settings.failover_strategy)  # which node is next
        self._wakeup, self._stop = WakeUp(), threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._next_heartbeat = 0.0
        self.looked_at = time.monotonic()  # it last began to wait for the socket (`Job.received`)
        self._virtual = VirtualPoll(self._wakeup)
        self.last_error: BaseException | None = None

    # -- any thread ---------------------------------------------------------------------------
    def start(self) -> None:
        """Start the I/O thread (once)."""
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()

    def submit(self, command: Callable[[], None]) -> None:
        """Run `command` on the I/O thread as soon as it is connected."""
        self._commands.append(command)
        self._virtual.busy()
        if not self._awake:
            self.wake()

    def run_or_submit(self, command: Callable[[], None]) -> None:
        """Run `command` on this thread when the connection is up and idle, else `submit` it.

        Saves the hand-over to the I/O thread on the hot path (a reply). If the connection fails
        meanwhile, the I/O thread drops it and reconnects as usual.
        """
        if self.connection is None or self._commands or not self._io_lock.acquire(blocking=False):
            self.submit(command)
            return
        generation = self.generation
        try:
            if self.connection is None or self._failure is not None:
                self._commands.append(command)
            else:
                command()
        except Exception as exc:
            self.fail(generation, exc)
        finally:
            self._io_lock.release()
        if self._failure is not None or (self._commands and not self._awake):
            self.wake()

    def wake(self) -> None:
        """Interrupt the I/O thread's wait."""
        self._wakeup.wake()

    def fail(self, generation: int, exc: BaseException) -> None:
        """Record that the connection of `generation` failed; the I/O thread drops it.

        A failure of a connection that was dropped already (its generation is gone) is ignored:
        it must never tear down the connection that replaced it.
        """
        if generation == self.generation and self.connection is not None:
            self._failure = (generation, exc)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread and close the connection; safe to call twice."""
        self._stop.set()
        self.wake()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        if thread is None or not thread.is_alive():
            self._wakeup.close()

    def stalled_for(self) -> float:
        """Return how long the connection has gone without a turn (0 without one: waiting to reconnect)."""
        return 0.0 if self.connection is None else max(0.0, time.monotonic() - self.looked_at)

    stopping = property(lambda self: self._stop.is_set(), doc="Tell whether `stop()` was called.")

    # -- the I/O thread -----------------------------------------------------------------------
    def _run(self) -> None:
        with self._io_lock:
            self._serve()
            self._close()
        self._wakeup.close()  # stopped (`stop` may have stopped waiting for this thread)

    def _serve(self) -> None:
        while not self._stop.is_set():
            self._step()
            self._run_deferred()

    def _step(self) -> None:
        """Serve once: (re)connect when there is no connection, else one turn on it."""
        if self.connection is None:
            if not self._wants_connection():
                self._idle()
                return
            if not self._connect():
                self._sleep(self._delay)
                self._delay = min(self._delay * 2, self.settings.reconnect_delay_max)
                return
            self._delay = self.settings.reconnect_delay
        generation = self.generation
        try:
            if not self._park():
                self._turn()
        except Exception as exc:
            # Unless another thread serving the connection (a standby) replaced it meanwhile: this
            # failure is the old connection's, and must not drop the new one.
            if generation == self.generation and self.connection is not None:
                self._drop(exc)

    def _connect(self) -> bool:
        try:
            self.connection = open_connection(self.settings.replace(broker_url=self._urls.take()), self._stop)
            self._amqp = self.connection.connection
            self.socket = getattr(self._amqp, "sock", None)
            self.fast = self.settings.fast_path and self.socket is not None and internals.usable(self._amqp)
            self.generation += 1
            self._next_heartbeat = 0.0
            logger.info("connected", loop=self.name, broker=mask_url(self._urls.current))
            self._on_connect(self.connection)
        except Exception as exc:
            self._drop(exc)
            return False
        return True

    def _drop(self, exc: BaseException) -> None:
        self.last_error = exc
        self._failure = None
        self._close(collect=True)  # the socket is gone already: release what is left, say nothing
        error = str(exc) or type(exc).__name__
        logger.warning("connection_lost", loop=self.name, error=error, error_type=type(exc).__name__)
        self._on_lost(exc)

    def _close(self, collect: bool = False) -> None:
        conn, self.connection = self.connection, None
        self._amqp = self.socket = None
        try:
            if conn is not None:
                conn.collect() if collect else conn.release()
        except Exception as exc:
            logger.debug("close_failed", loop=self.name, error=str(exc))

    def _turn(self, done: Callable[[], bool] | None = None) -> None:
        """Run commands and timers, then wait for the socket and read it; stop early once `done()`."""
        self._awake = True
        try:
            self._serve_turn(done)
        finally:
            self._awake = False

    def _serve_turn(self, done: Callable[[], bool] | None) -> None:
        conn = self.connection
        assert conn is not None
        self._check(conn)
        self._run_commands()
        now = time.monotonic()
        wait = _IDLE_WAIT
        next_due = self._on_tick(now)
        if done is not None and done():
            return  # settled by a timer of this turn: no wait for the socket
        if next_due is not None:
            wait = max(0.0, min(wait, next_due - now))
        if self.settings.heartbeat:
            if now >= self._next_heartbeat:
                conn.heartbeat_check()
                self._next_heartbeat = now + self.settings.heartbeat / 4
            wait = min(wait, max(0.0, self._next_heartbeat - now))
        self._awake = False  # before looking: a command submitted from now on wakes the pipe
        if self._commands:
            wait = 0.0
        sock = self.socket
        self.looked_at = now  # a moment before the wait: a wait counted a little long, never short
        if sock is None:
            self._virtual.poll(conn, wait)
            return
        if not has_buffered(sock):
            self._io_lock.release()
            try:
                readable, _, _ = select.select([sock, self._wakeup.fd], [], [], wait)
            finally:
                self._io_lock.acquire()
                self._awake = True  # the next turn runs what is submitted while this one reads
            self._check(conn)
            if self._wakeup.fd in readable:
                self._wakeup.drain()
            if sock not in readable or self._yields_socket():
                return
        drain(self._amqp, sock, self.fast)

    # -- hooks of the subclasses (`leading`, `deferring`) -------------------------------------
    def _park(self) -> bool:
        """Stay off the socket for a while instead of a turn; return whether it did."""
        return False

    def _yields_socket(self) -> bool:
        """Tell whether another thread reads the socket now (this turn must not)."""
        return False

    def _run_deferred(self) -> None:
        """Run the jobs deferred to the end of the turn."""

    def _yield_now(self) -> bool:
        """Tell whether this thread should hand the connection back at once (see `inline_calls`)."""
        return False

    def _check(self, conn: Connection) -> None:
        # kombu silently opens a new connection when one of its methods meets a dead one, so a
        # connection that failed (maybe on another thread, see `run_or_submit`) is dropped first.
        failure, self._failure = self._failure, None
        if failure is not None and failure[0] == self.generation:
            raise failure[1]
        if not conn.connected:
            raise ConnectionLost("the connection closed")

    def _run_commands(self) -> None:
        commands = self._commands
        while commands:
            commands.popleft()()

    def _idle(self) -> None:
        next_due = self._on_tick(time.monotonic())
        self._wakeup.wait(_IDLE_WAIT if next_due is None else min(_IDLE_WAIT, next_due - time.monotonic()))

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._stop.is_set() and not self._yield_now():
            now = time.monotonic()
            if now >= deadline:
                return
            next_due = self._on_tick(now)
            wait = deadline - now if next_due is None else min(deadline, next_due) - now
            self._wakeup.wait(wait)
