"""What a client has in flight, without a broker: deadlines, the watchdog, the wait, and user callbacks.

`Inflight.due` takes the time as an argument: those tests run on a clock of their own. The watchdog
sleeps on the real clock, so its tests use short deadlines and bounded waits, and check that nothing
fails before its deadline.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import pytest
from engine_support import WAIT, no_thread_left_behind  # noqa: F401

from tchu_rpc._client import inflight as inflight_module
from tchu_rpc._client.arguments import checked_timeout
from tchu_rpc._client.callbacks import Callbacks, CallFuture
from tchu_rpc._client.inflight import Inflight, Pending, Watchdog, wait
from tchu_rpc.errors import CallTimeout
from tchu_rpc.testing import capture_logs

pytestmark = pytest.mark.timeout(30)


def pending(deadline: float, future: futures.Future[Any] | None = None) -> Pending:
    return Pending(
        future=future if future is not None else futures.Future(),
        kind="call",
        topic="rpc.stock.level",
        body=b"{}",
        deadline=deadline,
        retry=False,
    )


# -- deadlines, on a clock of the test's own ----------------------------------------------------------


def test_only_calls_past_their_deadline_are_due() -> None:
    inflight = Inflight()
    early, late = pending(10.0), pending(20.0)
    inflight.add("early", early)
    inflight.add("late", late)

    assert inflight.due(9.9) == ([], 10.0)
    assert inflight.due(10.0) == ([("early", early)], 20.0)
    assert inflight.due(15.0) == ([], 20.0)  # a due call is handed out once


def test_a_postponed_deadline_is_due_only_when_the_new_deadline_passes() -> None:
    # Given a call due at 10, postponed to 15 by progress from its handler
    inflight = Inflight()
    call = pending(10.0)
    inflight.add("call", call)
    inflight.postpone("call", call, 15.0)

    # When the clock passes the first deadline, then the second
    # Then it is due only after the second
    assert inflight.due(12.0) == ([], 15.0)
    assert inflight.due(15.0) == ([("call", call)], None)


def test_a_settled_call_is_never_due() -> None:
    inflight = Inflight()
    future: futures.Future[Any] = futures.Future()
    inflight.add("call", pending(10.0, future))
    inflight.settle("call", 42)

    assert inflight.due(100.0) == ([], None)
    assert future.result(0) == 42
    assert inflight.outcome_of("call") == "ok"


def test_stale_deadlines_of_settled_calls_are_dropped_from_the_heap() -> None:
    # Given many calls settled before their deadlines (at 1..300), and one live call due at 1000
    inflight = Inflight()
    for i in range(300):
        inflight.add(f"settled-{i}", pending(float(i + 1)))
        inflight.settle(f"settled-{i}", None)
    live = pending(1000.0)
    inflight.add("live", live)
    assert inflight.next_deadline() == 1.0  # a settled call's deadline stays until looked at

    # When the thread serving the connection looks before any deadline
    due, next_due = inflight.due(0.5)

    # Then nothing is due, and the stale deadlines are gone: the next one is the live call's
    assert due == []
    assert next_due == inflight.next_deadline() == 1000.0


def test_settling_twice_resolves_the_future_once() -> None:
    inflight = Inflight()
    future: futures.Future[Any] = futures.Future()
    inflight.add("call", pending(10.0, future))
    inflight.settle("call", CallTimeout("late"))
    inflight.settle("call", 1)  # a reply arriving after the deadline

    with pytest.raises(CallTimeout):
        future.result(0)
    assert inflight.outcome_of("call") == "CallTimeout"


def test_cancel_forgets_the_call_and_a_late_settle_finds_nothing() -> None:
    # Given a call in flight
    inflight = Inflight()
    future: futures.Future[Any] = futures.Future()
    inflight.add("call", pending(10.0, future))
    # When its caller gives up
    assert inflight.cancel("call")
    # Then nothing is pending, its future is cancelled, and its late reply settles nothing
    assert len(inflight) == 0 and inflight.get("call") is None
    assert future.cancelled()
    inflight.settle("call", 1)
    assert inflight.outcome_of("call") == "cancelled"
    assert not inflight.cancel("call")  # twice: nothing to cancel


def test_a_call_the_caller_cancelled_settles_quietly() -> None:
    inflight = Inflight()
    future: futures.Future[Any] = futures.Future()
    inflight.add("call", pending(10.0, future))
    assert future.cancel()
    inflight.settle("call", 1)
    assert len(inflight) == 0


# -- the watchdog, on the real clock ----------------------------------------------------------------


class Expiry:
    """The client's `_expire`: settle what is due with `CallTimeout`; note when each call failed."""

    def __init__(self, inflight: Inflight) -> None:
        self.inflight = inflight
        self.failed_at: dict[str, float] = {}

    def __call__(self, now: float) -> float | None:
        due, next_due = self.inflight.due(now)
        for message_id, call in due:
            self.failed_at[message_id] = time.monotonic()
            self.inflight.settle(message_id, CallTimeout(f"no reply to call {call.topic!r}"))
        return next_due


class WatchedInflight(Inflight):
    """An `Inflight` that tells how often the watchdog asked for the next deadline (once per round)."""

    def __init__(self) -> None:
        super().__init__()
        self.rounds = 0
        self.asked = threading.Condition()

    def next_deadline(self) -> float | None:
        deadline = super().next_deadline()
        with self.asked:
            self.rounds += 1
            self.asked.notify_all()
        return deadline


def _future(callbacks: Callbacks) -> CallFuture:
    """A future as a client makes it: its done-callbacks go to `callbacks`."""
    future = CallFuture()
    future.callbacks = callbacks
    return future


@pytest.fixture
def make_watchdog() -> Iterator[Callable[[Inflight], tuple[Watchdog, Expiry]]]:
    made: list[Watchdog] = []

    def make(inflight: Inflight) -> tuple[Watchdog, Expiry]:
        expiry = Expiry(inflight)
        made.append(Watchdog("t-watchdog", inflight, expiry))
        return made[-1], expiry

    yield make
    for watchdog in made:
        watchdog.close()
        if watchdog._thread is not None:
            watchdog._thread.join(WAIT)


def test_the_watchdog_fails_a_call_nothing_else_settles_after_its_deadline(
    make_watchdog: Callable[[Inflight], tuple[Watchdog, Expiry]],
) -> None:
    # Given a call due in 0.1 s, and no thread serving the connection to expire it
    inflight = Inflight()
    watchdog, expiry = make_watchdog(inflight)
    deadline = time.monotonic() + 0.1
    future: futures.Future[Any] = futures.Future()
    inflight.add("call", pending(deadline, future))

    # When the watchdog is told of the deadline
    watchdog.watch(deadline)

    # Then the call fails with CallTimeout, not before its deadline
    with pytest.raises(CallTimeout):
        future.result(timeout=WAIT)
    assert expiry.failed_at["call"] >= deadline


def test_a_sooner_deadline_wakes_a_watchdog_sleeping_for_a_later_one(
    make_watchdog: Callable[[Inflight], tuple[Watchdog, Expiry]],
) -> None:
    inflight = WatchedInflight()
    watchdog, expiry = make_watchdog(inflight)
    # Given the watchdog asleep until a call due in 10 s (its first round always ends by the wake-up
    # of `watch`; in its second it sleeps for the 10 s deadline)
    later = pending(time.monotonic() + 10.0)
    inflight.add("later", later)
    watchdog.watch(later.deadline)
    with inflight.asked:
        assert inflight.asked.wait_for(lambda: inflight.rounds >= 2, timeout=WAIT)

    # When a call due in 0.1 s is added
    sooner_deadline = time.monotonic() + 0.1
    sooner: futures.Future[Any] = futures.Future()
    inflight.add("sooner", pending(sooner_deadline, sooner))
    watchdog.watch(sooner_deadline)

    # Then the watchdog wakes and fails it, long before the later deadline, and leaves the later call
    with pytest.raises(CallTimeout):
        sooner.result(timeout=2.0)  # else it would fail only with the later one, 10 s on
    assert expiry.failed_at["sooner"] >= sooner_deadline
    assert not later.future.done()


def test_a_closed_watchdog_starts_no_thread(
    make_watchdog: Callable[[Inflight], tuple[Watchdog, Expiry]],
) -> None:
    inflight = Inflight()
    watchdog, _ = make_watchdog(inflight)
    watchdog.close()
    watchdog.watch(time.monotonic() + 0.1)
    assert watchdog._thread is None


# -- the caller's wait -------------------------------------------------------------------------------


def test_wait_returns_the_outcome_of_a_settled_call() -> None:
    call = pending(time.monotonic() + 10.0)
    call.future.set_result({"level": 3})
    assert wait(call, "rpc.stock.level") == {"level": 3}


def test_wait_raises_the_calls_own_timeout_not_one_of_its_own() -> None:
    call = pending(time.monotonic() + 10.0)
    own = CallTimeout("no reply to call 'rpc.stock.level' before the deadline")
    call.future.set_exception(own)
    with pytest.raises(CallTimeout) as raised:
        wait(call, "rpc.stock.level")
    assert raised.value is own


def test_wait_gives_up_past_the_deadline_when_nothing_settles_the_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a call past its deadline that no thread settles (an I/O thread stuck), and a short grace
    monkeypatch.setattr(inflight_module, "_GRACE", 0.05)
    call = pending(time.monotonic())
    # When the caller waits
    # Then it stops trusting the other threads after the grace and raises a CallTimeout saying so
    with pytest.raises(CallTimeout, match="stuck"):
        wait(call, "rpc.stock.level")
    assert not call.future.done()


@pytest.mark.parametrize("timeout", [0, -1, math.nan, math.inf, -math.inf])
def test_checked_timeout_refuses_what_is_not_a_positive_number_of_seconds(timeout: float) -> None:
    with pytest.raises(ValueError, match="positive number of seconds"):
        checked_timeout(timeout, 30.0)


def test_checked_timeout_takes_the_default_for_none_and_keeps_a_positive_timeout() -> None:
    assert checked_timeout(None, 30.0) == 30.0
    assert checked_timeout(0.25, 30.0) == 0.25


# -- user callbacks on their own thread ---------------------------------------------------------------


class CallbackLog:
    """What the callbacks saw, in order, on which thread; a condition to wait for a count on."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self.changed = threading.Condition()

    def callback(self, name: str) -> Callable[[futures.Future[Any]], None]:
        def record(future: futures.Future[Any]) -> None:
            with self.changed:
                self.seen.append((name, threading.current_thread().name))
                self.changed.notify_all()

        return record

    def wait_for(self, count: int, timeout: float = WAIT) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: len(self.seen) >= count, timeout=timeout)


@pytest.fixture
def callbacks() -> Iterator[Callbacks]:
    runner = Callbacks("t-callbacks")
    yield runner
    runner.close()
    if runner._thread is not None:
        runner._thread.join(WAIT)


def test_done_callbacks_run_on_the_callback_thread_in_the_order_futures_settled(callbacks: Callbacks) -> None:
    # Given three futures, each with a done-callback
    log = CallbackLog()
    first, second, third = (_future(callbacks) for _ in range(3))
    first.add_done_callback(log.callback("first"))
    second.add_done_callback(log.callback("second"))
    third.add_done_callback(log.callback("third"))

    # When they settle out of their creation order
    second.set_result(2)
    third.set_exception(CallTimeout("late"))
    first.set_result(1)

    # Then their callbacks ran in settle order, all on the callback thread, none on the settling one
    assert log.wait_for(3)
    assert log.seen == [("second", "t-callbacks"), ("third", "t-callbacks"), ("first", "t-callbacks")]


def test_a_failing_callback_is_logged_and_later_ones_still_run(callbacks: Callbacks) -> None:
    log = CallbackLog()
    failing, later = _future(callbacks), _future(callbacks)

    def explode(future: futures.Future[Any]) -> None:
        raise ValueError("the user's bug")

    failing.add_done_callback(explode)
    later.add_done_callback(log.callback("later"))

    with capture_logs() as logs:
        # When the first future's callback raises
        failing.set_result(1)
        later.set_result(2)
        # Then the next callback still runs (after the failure was logged: one thread, in order)
        assert log.wait_for(1)

    assert log.seen == [("later", "t-callbacks")]
    failures = [entry for entry in logs if entry["event"] == "callback_failed"]
    assert len(failures) == 1
    assert failures[0]["error_type"] == "ValueError"
    assert failures[0]["error"] == "the user's bug"
    assert "explode" in failures[0]["callback"]


def test_a_callback_added_after_the_future_is_done_runs_on_the_callback_thread(callbacks: Callbacks) -> None:
    # Given a future already settled
    log = CallbackLog()
    future = _future(callbacks)
    future.set_result(1)
    # When a callback is added to it
    future.add_done_callback(log.callback("late"))
    # Then it runs on the callback thread, not on the thread that added it
    assert log.wait_for(1)
    assert log.seen == [("late", "t-callbacks")]


def test_a_callback_added_after_close_still_runs(callbacks: Callbacks) -> None:
    # Given a future failed by the client's close, its callback run, and the callback thread closed after
    log = CallbackLog()
    future = _future(callbacks)
    future.add_done_callback(log.callback("before close"))
    future.set_exception(CallTimeout("client closed"))
    assert log.wait_for(1)
    callbacks.close()
    # When the user adds another done-callback to it afterwards
    future.add_done_callback(log.callback("after close"))
    # Then that one runs too (the callback thread has nothing else to do: a second is plenty)
    assert log.wait_for(2, timeout=1.0)
