"""User callbacks (call_async done-callbacks, on_progress) never hold the thread that reads replies.

Issue 11 (B): they ran on the client's I/O thread ("tchu-client") or on a caller reading its own
reply, so a callback making a call on the same client stalled the connection (a 6 s stall, and an
unrelated 1 s call failing after 5.7 s). The fix runs them on a callback thread of their own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from tchu_rpc import Client, Registry, report_progress
from tchu_rpc.testing import TchuFactory

WAIT = 10.0  # bound on every wait for something that happens at once when the client works
IO_THREAD = "tchu-client"  # the name of a client's I/O thread


class Gates:
    """Events the handlers wait on; all opened at teardown, before the worker stops."""

    def __init__(self) -> None:
        self.answer = threading.Event()  # lets `rpc.cb.gated` return
        self.slow = threading.Event()  # lets `rpc.cb.slow` return


@pytest.fixture
def gates(tchu: TchuFactory) -> Iterator[Gates]:
    made = Gates()
    yield made
    made.answer.set()
    made.slow.set()


@pytest.fixture
def client(tchu: TchuFactory, gates: Gates) -> Client:
    """Return a connected client of a worker with a gated, a progressing, a slow and a quick handler."""
    registry = Registry()

    @registry.subscribe("rpc.cb.gated")
    def gated(data: Any) -> Any:
        assert gates.answer.wait(WAIT)
        return "gated"

    @registry.subscribe("rpc.cb.progress")
    def progress(data: Any) -> Any:
        report_progress("working")
        assert gates.answer.wait(WAIT)
        return "progressed"

    @registry.subscribe("rpc.cb.slow")
    def slow(data: Any) -> Any:
        gates.slow.wait(3)  # a slow handler: holds until released, a few seconds at most
        return "slow"

    @registry.subscribe("rpc.cb.quick")
    def quick(data: Any) -> Any:
        return data

    tchu.worker(registry, call_concurrency=4)
    client = tchu.client()
    # Connected, so that a caller alone in flight reads its own reply (and runs what comes with it).
    assert client.call("rpc.cb.quick", "warm", timeout=WAIT) == "warm"
    return client


class NestedCall:
    """A callback that makes a blocking call to the slow handler on the same client."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.entered = threading.Event()
        self.outcome: Future[Any] = Future()

    def __call__(self, *args: Any) -> None:
        if self.entered.is_set():
            return  # a later progress report
        self.entered.set()
        try:
            self.outcome.set_result(self.client.call("rpc.cb.slow", None, timeout=5))
        except Exception as exc:
            self.outcome.set_exception(exc)


def start_with_done_callback(client: Client, callback: Callable[..., None], gates: Gates) -> None:
    future = client.call_async("rpc.cb.gated", None, timeout=WAIT)
    future.add_done_callback(callback)
    gates.answer.set()  # answered only once the callback is attached


def start_async_with_progress(client: Client, callback: Callable[..., None], gates: Gates) -> None:
    client.call_async("rpc.cb.progress", None, timeout=WAIT, on_progress=callback)


def start_call_with_progress(client: Client, callback: Callable[..., None], gates: Gates) -> None:
    threading.Thread(
        target=client.call,
        args=("rpc.cb.progress", None),
        kwargs={"timeout": WAIT, "on_progress": callback},
        name="progress-caller",
        daemon=True,
    ).start()


@pytest.mark.timeout(40)
@pytest.mark.parametrize(
    "start",
    [start_with_done_callback, start_async_with_progress, start_call_with_progress],
    ids=["done_callback", "on_progress_of_call_async", "on_progress_of_call"],
)
def test_a_callback_making_a_call_does_not_stall_an_unrelated_call(
    client: Client, gates: Gates, start: Callable[[Client, Callable[..., None], Gates], None]
) -> None:
    # Given a callback that makes a blocking call on the same client to a slow handler
    nested = NestedCall(client)
    start(client, nested, gates)
    assert nested.entered.wait(WAIT), "the callback never ran"

    # When another thread makes an unrelated call with a 1 s timeout while the callback waits
    with ThreadPoolExecutor(1) as pool:
        unrelated = pool.submit(client.call, "rpc.cb.quick", "unrelated", timeout=1)

        # Then it is answered within its timeout (it raises CallTimeout if the connection is stalled)
        assert unrelated.result(timeout=WAIT) == "unrelated"

    # And the callback's own call is answered once the slow handler returns
    gates.slow.set()
    assert nested.outcome.result(timeout=WAIT) == "slow"


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    "start",
    [start_with_done_callback, start_async_with_progress, start_call_with_progress],
    ids=["done_callback", "on_progress_of_call_async", "on_progress_of_call"],
)
def test_a_callback_runs_neither_on_the_io_thread_nor_on_the_calling_thread(
    client: Client, gates: Gates, start: Callable[[Client, Callable[..., None], Gates], None]
) -> None:
    # Given a callback that records the thread it runs on
    ran_on: Future[str] = Future()

    def record(*args: Any) -> None:
        if not ran_on.done():
            ran_on.set_result(threading.current_thread().name)

    # When a call (from this thread, or from "progress-caller" for a sync call) invokes it
    start(client, record, gates)
    name = ran_on.result(timeout=WAIT)

    # Then it ran on neither the client's I/O thread nor the thread that made the call
    caller = "progress-caller" if start is start_call_with_progress else threading.current_thread().name
    assert name not in (IO_THREAD, caller), f"callback ran on {name!r}"
