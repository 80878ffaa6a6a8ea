"""The worker's loop without a broker: deferred jobs of a dropped connection are skipped, the standby covers.

The test's own thread plays the I/O thread: it holds the I/O lock as that thread does, and calls
`_run_deferred` where that thread would, after its reads. Fakes stand for kombu's connection, and a socket
pair for its socket; events gate every step, so each interleaving is the one the test names.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from engine_support import PairConnection, UpConnection, no_thread_left_behind  # noqa: F401

from tchu_rpc._amqp import loop as loop_module
from tchu_rpc._amqp.inline_calls import DeferringLoop
from tchu_rpc.config import Settings

pytestmark = pytest.mark.timeout(30)

#: Every bounded wait of these tests; far beyond what any step takes, short of the per-test timeout.
WAIT = 5.0
STANDBY = "t-inline-standby"


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[PairConnection]]:
    """Socket-pair connections, the ones `open_connection` hands out included; closed at the end.

    `_IDLE_WAIT` goes up to 60 s, so a turn's wait ends only by the wake-up pipe.
    """
    made: list[PairConnection] = []

    def open_connection(settings: Settings, cancel: object = None) -> PairConnection:
        made.append(PairConnection())
        return made[-1]

    monkeypatch.setattr(loop_module, "open_connection", open_connection)
    monkeypatch.setattr(loop_module, "_IDLE_WAIT", 60.0)
    yield made
    for conn in made:
        conn.close_all()


@pytest.fixture
def make_loop(connections: list[PairConnection]) -> Iterator[Callable[..., DeferringLoop]]:
    """Build a `DeferringLoop` (its I/O thread not started) up on a fake connection at generation 1."""
    loops: list[DeferringLoop] = []

    def make(**hooks: Any) -> DeferringLoop:
        hooks.setdefault("on_connect", lambda conn: None)
        hooks.setdefault("on_lost", lambda exc: None)
        loop = DeferringLoop("t-inline", Settings(heartbeat=0), **hooks)
        conn = PairConnection()
        connections.append(conn)
        loop.connection, loop._amqp, loop.socket, loop.generation = conn, conn, conn.sock, 1
        loops.append(loop)
        return loop

    yield make
    for loop in loops:
        stop(loop)


def stop(loop: DeferringLoop) -> None:
    """Stop the standby thread first, then the loop: `stop` closes the pipe a standby turn may read."""
    loop._stop.set()
    loop.wake()
    if loop._standby is not None:
        loop._standby.join(WAIT)
        assert not loop._standby.is_alive()
    loop.stop(0)


def park_standby(loop: DeferringLoop) -> None:
    """End the standby thread `defer` started, so that it cannot take the connection during the test.

    `_run_deferred` does not look at the stop event; only the standby does.
    """
    loop._stop.set()
    assert loop._standby is not None
    loop._standby.join(WAIT)
    assert not loop._standby.is_alive()


class Trace:
    """What ran, in order: jobs, skips, and whether a job ran holding the I/O lock."""

    def __init__(self, loop: DeferringLoop) -> None:
        self.loop = loop
        self.events: list[str] = []

    def job(self, name: str) -> Callable[[], None]:
        def run() -> None:
            locked = "with the lock" if self.loop._io_lock.locked() else "without the lock"
            self.events.append(f"ran {name} {locked}")

        return run

    def skip(self, name: str) -> Callable[[], None]:
        return lambda: self.events.append(f"skipped {name}")


def run_deferred_as_the_io_thread(loop: DeferringLoop) -> None:
    """Run the deferred jobs as the I/O thread does: holding the I/O lock, which it has back after."""
    with loop._io_lock:
        loop._run_deferred()
        assert loop._io_lock.locked() and not loop.away


def test_a_job_of_the_current_connection_runs_without_the_io_lock(
    make_loop: Callable[..., DeferringLoop],
) -> None:
    loop = make_loop()
    trace = Trace(loop)
    # Given a job deferred on the current connection
    loop.defer(trace.job("A"), trace.skip("A"))
    park_standby(loop)
    # When the I/O thread runs the deferred jobs
    run_deferred_as_the_io_thread(loop)
    # Then the job ran, with the connection free for other threads meanwhile
    assert trace.events == ["ran A without the lock"]


def test_a_job_deferred_before_a_reconnect_is_skipped(make_loop: Callable[..., DeferringLoop]) -> None:
    loop = make_loop()
    trace = Trace(loop)
    # Given a job deferred on connection 1
    loop.defer(trace.job("A"), trace.skip("A"))
    park_standby(loop)
    # When the loop has moved on to connection 2 before the job started
    loop.connection, loop.generation = UpConnection(), 2
    # Then the job is skipped: its delivery died with connection 1, and the broker redelivers it
    run_deferred_as_the_io_thread(loop)
    assert trace.events == ["skipped A"]


def test_a_job_deferred_before_the_connection_dropped_is_skipped(
    make_loop: Callable[..., DeferringLoop],
) -> None:
    loop = make_loop()
    trace = Trace(loop)
    loop.defer(trace.job("A"), trace.skip("A"))
    park_standby(loop)
    # When the connection was dropped (and not yet replaced) before the job started
    loop.connection = None
    # Then the job is skipped
    run_deferred_as_the_io_thread(loop)
    assert trace.events == ["skipped A"]


def test_deferred_jobs_of_old_and_new_connections_are_skipped_or_run_in_order(
    make_loop: Callable[..., DeferringLoop],
) -> None:
    loop = make_loop()
    trace = Trace(loop)
    # Given two jobs deferred on connection 1, and one on connection 2 after a reconnect
    loop.defer(trace.job("A"), trace.skip("A"))
    loop.defer(trace.job("B"), trace.skip("B"))
    park_standby(loop)
    loop.generation = 2
    loop.defer(trace.job("C"), trace.skip("C"))
    # When the I/O thread runs them
    run_deferred_as_the_io_thread(loop)
    # Then only the job of the current connection runs, each in its turn
    assert trace.events == ["skipped A", "skipped B", "ran C without the lock"]


def test_the_standby_serves_the_connection_while_a_deferred_job_runs_long(
    make_loop: Callable[..., DeferringLoop],
) -> None:
    served_by: list[str] = []
    standby_served = threading.Event()

    def on_tick(now: float) -> None:
        # Each turn of whichever thread serves the connection runs the loop's timers.
        served_by.append(threading.current_thread().name)
        if threading.current_thread().name == STANDBY:
            standby_served.set()

    loop = make_loop(on_tick=on_tick)
    commands_ran_on: list[str] = []
    command_ran = threading.Event()
    job_saw: list[bool] = []

    def long_handler() -> None:
        # Runs until the standby has served the connection and run a command submitted meanwhile.
        job_saw.append(standby_served.wait(WAIT))
        loop.submit(lambda: (commands_ran_on.append(threading.current_thread().name), command_ran.set()))
        job_saw.append(command_ran.wait(WAIT))

    # Given a call handler deferred to the I/O thread
    loop.defer(long_handler, lambda: None)

    # When the I/O thread runs it, and it runs past the standby's patience
    run_deferred_as_the_io_thread(loop)

    # Then the standby served the connection meanwhile (timers, and a command submitted), and the I/O
    # thread had the connection back once the handler returned
    assert job_saw == [True, True]
    assert commands_ran_on == [STANDBY]
    assert set(served_by) == {STANDBY}


def test_a_standby_turn_that_waited_on_the_old_connection_leaves_the_new_one_alone(
    make_loop: Callable[..., DeferringLoop],
    connections: list[PairConnection],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The hand-over between the standby and the I/O thread: the I/O thread takes the lock back while
    # the standby waits in select() (the lock let go), finds the connection dead and replaces it; the
    # standby's turn then wakes on the old connection, whose failure is no longer the loop's.
    lost: list[BaseException] = []
    loop = make_loop(on_lost=lost.append)
    first = loop.connection
    assert isinstance(first, PairConnection)
    standby_waits = threading.Event()
    standby_may_go_on = threading.Event()
    real_select = loop_module.select.select

    def select(rlist: Any, wlist: Any, xlist: Any, timeout: float) -> Any:
        # The standby's first wait on the socket: say it is waiting, and once the wait ends, go on
        # only when the test says so (so that the I/O thread takes the lock back first).
        if threading.current_thread().name != STANDBY or standby_waits.is_set():
            return real_select(rlist, wlist, xlist, timeout)
        standby_waits.set()
        ready = real_select(rlist, wlist, xlist, timeout)
        assert standby_may_go_on.wait(WAIT)
        return ready

    monkeypatch.setattr(loop_module, "select", type("Select", (), {"select": staticmethod(select)}))

    def handler() -> None:
        # Returns while the standby waits on the connection's socket; the connection dies meanwhile.
        assert standby_waits.wait(WAIT)
        first.connected = False

    # Given a long handler on the I/O thread, the standby waiting on connection 1's socket meanwhile,
    # and connection 1 dead by the time the handler returns
    loop.defer(handler, lambda: None)
    with loop._io_lock:
        loop._run_deferred()  # its wake-up ends the standby's wait; the I/O thread has the lock first
        # When the I/O thread finds connection 1 dead, drops it and connects again
        loop._step()
        assert loop.connection is None and len(lost) == 1
        assert loop._connect()
        second = loop.connection
    # ... and then lets go of the lock (as it does to wait), while the standby's turn goes on
    standby_may_go_on.set()
    stop(loop)

    # Then the standby's turn on connection 1 has not dropped connection 2
    assert second is connections[-1]
    assert loop.connection is second
    assert len(lost) == 1
