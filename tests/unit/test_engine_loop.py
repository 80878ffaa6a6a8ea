"""The I/O loop without a broker: failures belong to their connection, the wake-up pipe, leading callers.

Fakes stand for kombu's connection, and a socket pair for the broker's socket, so that every interleaving
here is forced by the test (a lock held, an event set, the broker's end closed), never left to timing.
"""

from __future__ import annotations

import fcntl
import os
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from engine_support import WAIT, PairConnection, UpConnection, no_thread_left_behind  # noqa: F401

from tchu_rpc._amqp import loop as loop_module
from tchu_rpc._amqp.caller_reads import LeadingLoop
from tchu_rpc._amqp.loop import Loop
from tchu_rpc._amqp.wakeup import WakeUp
from tchu_rpc.config import Settings
from tchu_rpc.errors import ConnectionLost

pytestmark = pytest.mark.timeout(30)


class Recorder:
    """The loop's `on_connect` and `on_lost` hooks: what happened, and a condition to wait on."""

    def __init__(self) -> None:
        self.connected: list[Any] = []
        self.lost: list[BaseException] = []
        self.changed = threading.Condition()

    def on_connect(self, conn: Any) -> None:
        with self.changed:
            self.connected.append(conn)
            self.changed.notify_all()

    def on_lost(self, exc: BaseException) -> None:
        with self.changed:
            self.lost.append(exc)
            self.changed.notify_all()

    def wait_for(self, predicate: Callable[[], bool]) -> bool:
        with self.changed:
            return self.changed.wait_for(predicate, timeout=WAIT)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def make_loop(recorder: Recorder) -> Iterator[Callable[..., Any]]:
    """Build loops (not started) with the recorder's hooks; stop each at the end."""
    loops: list[Loop] = []

    def make(cls: type[Loop] = Loop, **kwargs: Any) -> Any:
        kwargs.setdefault("on_connect", recorder.on_connect)
        kwargs.setdefault("on_lost", recorder.on_lost)
        loop = cls("t-loop", Settings(heartbeat=0), **kwargs)
        loops.append(loop)
        return loop

    yield make
    for loop in loops:
        loop.stop(WAIT)


@pytest.fixture
def pair_connections(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[PairConnection]]:
    """Make the loop's `open_connection` hand out socket-pair connections; list them in order.

    `_IDLE_WAIT` goes up to 60 s, so a wait of the I/O thread ends only by its socket or its wake-up pipe.
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


def woken(loop: Loop) -> bool:
    """Tell whether a wake-up waits on the loop's pipe (and forget it), without waiting."""
    return loop._wakeup.wait(0)


def pipe_bytes(fd: int) -> bytes:
    """Return what waits in the non-blocking pipe end `fd`, without waiting."""
    try:
        return os.read(fd, 1 << 16)
    except BlockingIOError:
        return b""


# -- a failure belongs to the generation of its connection (issue 11, defect 10) ----------------


def test_a_failure_reported_for_a_replaced_connection_is_ignored(make_loop: Callable[..., Loop]) -> None:
    # Given a loop on its second connection
    loop = make_loop()
    loop.connection, loop.generation = UpConnection(), 2
    # When a thread reports a failure it met on the first one
    loop.fail(1, RuntimeError("broken pipe on the old socket"))
    # Then the I/O thread's check lets the new connection be
    loop._check(loop.connection)


def test_a_failure_recorded_just_before_a_reconnect_does_not_tear_down_the_new_connection(
    make_loop: Callable[..., Loop],
) -> None:
    # Given a failure recorded for connection 1 (the thread saw generation 1 when it recorded it)
    loop = make_loop()
    loop.connection, loop.generation = UpConnection(), 1
    loop.fail(1, RuntimeError("broken pipe"))
    # When the I/O thread meanwhile dropped connection 1 and connected again
    loop.connection, loop.generation = UpConnection(), 2
    # Then its check on connection 2 ignores the failure of connection 1
    loop._check(loop.connection)


def test_a_command_failing_while_the_connection_is_replaced_leaves_the_new_one_alone(
    make_loop: Callable[..., Loop],
) -> None:
    loop = make_loop()
    loop.connection, loop.generation = UpConnection(), 1
    ran_on: list[str] = []

    def publish_on_a_socket_that_was_replaced() -> None:
        # The connection is replaced while the command runs (a reconnection), then the command
        # fails on the socket it started on.
        ran_on.append(threading.current_thread().name)
        loop.connection, loop.generation = UpConnection(), 2
        raise OSError("broken pipe on the old socket")

    # When a thread runs a command on the idle connection and the command fails after a reconnect
    loop.run_or_submit(publish_on_a_socket_that_was_replaced)

    # Then the command ran on the calling thread, and the new connection passes the I/O thread's check
    assert ran_on == [threading.current_thread().name]
    loop._check(loop.connection)


def test_a_command_failing_on_the_current_connection_makes_the_io_thread_drop_it(
    make_loop: Callable[..., Loop],
) -> None:
    loop = make_loop()
    loop.connection, loop.generation = UpConnection(), 3
    failure = OSError("broken pipe")

    def publish_on_a_dead_socket() -> None:
        raise failure

    # When a command run on a caller's thread fails on the current connection
    loop.run_or_submit(publish_on_a_dead_socket)

    # Then the I/O thread is woken, and its next check raises that failure (it then drops the connection)
    assert woken(loop)
    with pytest.raises(OSError) as raised:
        loop._check(loop.connection)
    assert raised.value is failure


def test_a_connection_that_closed_fails_the_check(make_loop: Callable[..., Loop]) -> None:
    loop = make_loop()
    conn = UpConnection()
    conn.connected = False
    loop.connection, loop.generation = conn, 1
    with pytest.raises(ConnectionLost):
        loop._check(conn)


def test_a_command_waits_for_the_io_thread_while_it_holds_the_connection(
    make_loop: Callable[..., Loop],
) -> None:
    loop = make_loop()
    loop.connection, loop.generation = UpConnection(), 1
    ran_on: list[str] = []

    # Given the I/O thread in its turn (it holds the I/O lock; this thread holds it in its place)
    with loop._io_lock:
        # When another thread has a command to run
        loop.run_or_submit(lambda: ran_on.append(threading.current_thread().name))
        # Then it is queued, not run, and the I/O thread is woken for it
        assert ran_on == []
        assert woken(loop)
        # And the I/O thread runs it in its turn
        loop._run_commands()
    assert ran_on == [threading.current_thread().name]


def test_a_dropped_connection_is_replaced_and_only_current_failures_drop_the_new_one(
    make_loop: Callable[..., Loop], recorder: Recorder, pair_connections: list[PairConnection]
) -> None:
    loop = make_loop()
    # Given the I/O thread on its first connection
    loop.start()
    assert recorder.wait_for(lambda: len(recorder.connected) == 1)
    first = pair_connections[0]

    # When the broker closes that connection's socket
    first.broker_end.close()

    # Then the loop drops it and connects again, as generation 2
    assert recorder.wait_for(lambda: len(recorder.connected) == 2)
    assert len(recorder.lost) == 1 and isinstance(recorder.lost[0], OSError)
    assert first.collected
    assert loop.generation == 2

    # When a thread reports, late, a failure it met on the first connection
    loop.fail(1, OSError("broken pipe on the old socket"))
    loop.wake()
    # Then the second connection stays up: a command submitted after that runs on it
    seen: list[tuple[int, str]] = []
    ran = threading.Event()

    def look() -> None:
        seen.append((loop.generation, threading.current_thread().name))
        ran.set()

    loop.submit(look)
    assert ran.wait(WAIT)
    assert seen == [(2, "t-loop")]
    assert len(recorder.lost) == 1

    # When a thread reports a failure of the second connection
    current = OSError("broken pipe")
    loop.fail(2, current)
    loop.wake()
    # Then the loop drops it and connects a third time
    assert recorder.wait_for(lambda: len(recorder.connected) == 3)
    assert recorder.lost[1:] == [current]
    assert pair_connections[1].collected


def test_a_command_submitted_while_the_io_thread_waits_runs_at_once(
    make_loop: Callable[..., Loop], recorder: Recorder, pair_connections: list[PairConnection]
) -> None:
    loop = make_loop()
    loop.start()
    assert recorder.wait_for(lambda: len(recorder.connected) == 1)
    # Given the I/O thread waiting on its socket for up to 60 s (it lets go of the I/O lock only there)
    assert loop._io_lock.acquire(timeout=WAIT)
    loop._io_lock.release()
    ran_on: list[str] = []
    ran = threading.Event()

    # When another thread submits a command
    loop.submit(lambda: (ran_on.append(threading.current_thread().name), ran.set()))

    # Then the wake-up pipe ends the wait and the I/O thread runs it, long before the wait would end
    assert ran.wait(WAIT)
    assert ran_on == ["t-loop"]


# -- the wake-up pipe ----------------------------------------------------------------------------


def test_wake_after_stop_neither_raises_nor_writes_to_a_reused_descriptor(
    make_loop: Callable[..., Loop],
) -> None:
    # Given a stopped loop, whose pipe's descriptor numbers the next pipe is likely to get again
    loop = make_loop()
    loop.stop(0)
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    try:
        # When something wakes it
        loop.wake()
        # Then nothing was written anywhere, not even to a pipe that took over its numbers
        assert loop._wakeup.fd == -1
        assert pipe_bytes(read_end) == b""
    finally:
        os.close(read_end)
        os.close(write_end)


def test_stop_twice_is_safe(make_loop: Callable[..., Loop]) -> None:
    loop = make_loop()
    loop.stop(0)
    loop.stop(0)
    assert loop.stopping


def test_wake_ups_beyond_the_pipes_capacity_neither_block_nor_raise() -> None:
    wakeup = WakeUp()
    try:
        # Given a pipe filled to the brim by wake-ups (an I/O thread that has not looked for a while)
        capacity = fcntl.fcntl(wakeup.fd, fcntl.F_GETPIPE_SZ)
        # When one more comes
        for _ in range(capacity + 1):
            wakeup.wake()
        # Then it is dropped quietly (one is pending already), and one wait takes them all
        assert wakeup.wait(0)
        assert not wakeup.wait(0)
    finally:
        wakeup.close()
        wakeup.close()


def test_concurrent_wakes_during_stop_never_raise(make_loop: Callable[..., Loop]) -> None:
    # Given a running, idle I/O thread (it wants no connection) and eight threads about to wake it
    loop = make_loop(wants_connection=lambda: False)
    loop.start()
    wakers = 8
    start = threading.Barrier(wakers + 1)
    stopped = threading.Event()
    errors: list[BaseException] = []
    wakes = [0] * wakers

    def wake_until_stopped(index: int) -> None:
        try:
            start.wait(WAIT)
            # Before, during and after `stop` closes the pipe; bounded should the test stall.
            while not stopped.is_set() and wakes[index] < 1_000_000:
                loop.wake()
                wakes[index] += 1
            loop.wake()
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=wake_until_stopped, args=(i,), name=f"t-waker-{i}") for i in range(wakers)
    ]
    for thread in threads:
        thread.start()

    # When the loop stops while they wake it
    start.wait(WAIT)
    loop.stop(WAIT)
    stopped.set()
    for thread in threads:
        thread.join(WAIT)

    # Then no wake-up raised, the I/O thread ended and its pipe is closed
    assert errors == []
    assert not any(thread.is_alive() for thread in threads)
    assert loop._thread is not None and not loop._thread.is_alive()
    assert loop._wakeup.fd == -1


# -- a caller reading its own reply (`LeadingLoop.lead`) ------------------------------------------


@pytest.fixture
def socket_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, broker = socket.socketpair()
    yield ours, broker
    ours.close()
    broker.close()


def leading_loop(make_loop: Callable[..., Any], sock: socket.socket) -> LeadingLoop:
    """Return a `LeadingLoop` on an up connection with a socket (what `lead` asks for) at generation 1."""
    loop: LeadingLoop = make_loop(LeadingLoop)
    loop.connection, loop.socket, loop.generation = UpConnection(), sock, 1
    return loop


def test_a_lead_ended_by_a_failure_leaves_the_drop_to_the_io_thread(
    make_loop: Callable[..., Any], socket_pair: tuple[socket.socket, socket.socket]
) -> None:
    loop = leading_loop(make_loop, socket_pair[0])
    failure = OSError("broken pipe")

    def fail() -> None:
        raise failure

    # Given a command that fails when the caller's turn runs it
    loop._commands.append(fail)

    # When a caller leads the connection to wait for its reply
    loop.lead(lambda: False)

    # Then the lead ends without raising, leaves the connection to no one, wakes the I/O thread,
    # and the I/O thread's check raises the failure (it then drops the connection)
    assert loop._leader is None
    assert not loop._io_lock.locked()
    assert woken(loop)
    with pytest.raises(OSError) as raised:
        loop._check(loop.connection)
    assert raised.value is failure


def test_a_lead_failing_after_a_reconnect_leaves_the_new_connection_alone(
    make_loop: Callable[..., Any], socket_pair: tuple[socket.socket, socket.socket]
) -> None:
    loop = leading_loop(make_loop, socket_pair[0])

    def reconnect_then_fail() -> None:
        loop.connection, loop.generation = UpConnection(), 2
        raise OSError("broken pipe on the old socket")

    # Given a caller's turn in which the connection is replaced, then the old one fails
    loop._commands.append(reconnect_then_fail)

    # When the caller leads
    loop.lead(lambda: False)

    # Then the failure of generation 1 does not reach the check of generation 2
    assert loop._leader is None
    loop._check(loop.connection)


def test_no_caller_leads_without_a_connection(make_loop: Callable[..., Any]) -> None:
    loop: LeadingLoop = make_loop(LeadingLoop)
    asked: list[bool] = []
    loop.lead(lambda: asked.append(True) or False)
    assert asked == []
    assert loop._leader is None and not loop._io_lock.locked()
