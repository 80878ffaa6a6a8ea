"""A caller alone in flight reads its own reply (`Loop.lead`); everyone else is still answered.

While a caller leads, and for a moment after, the client's I/O thread stays off the socket. These
tests stretch that moment and the I/O thread's idle wait to an hour, so a reply nobody reads would
show up as a `CallTimeout` (within the test's timeouts), never as a slower pass.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from tchu_rpc import Client, ConnectionLost, Registry, report_progress
from tchu_rpc import client as client_module
from tchu_rpc._amqp import caller_reads as leading
from tchu_rpc._amqp import loop
from tchu_rpc._client.replies import on_reply
from tchu_rpc.testing import TchuFactory

WAIT = 10.0


@pytest.fixture
def parked_for_an_hour(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Keep a parked I/O thread parked unless something wakes it."""
    monkeypatch.setattr(leading, "_LINGER", 3600.0)
    monkeypatch.setattr(leading, "_PARK_MAX", 3600.0)
    monkeypatch.setattr(loop, "_IDLE_WAIT", 3600.0)
    yield


def _registry(gates: dict[str, threading.Event], started: dict[str, threading.Event]) -> Registry:
    registry = Registry()

    @registry.subscribe("rpc.lead.echo")
    def echo(data: Any) -> Any:
        return data

    @registry.subscribe("rpc.lead.gated")
    def gated(data: str) -> str:
        started[data].set()
        assert gates[data].wait(WAIT), f"gate {data!r} never opened"
        return data

    @registry.subscribe("rpc.lead.progress")
    def progress(data: None) -> str:
        report_progress({"step": 1})
        return "done"

    return registry


@pytest.fixture
def gates() -> dict[str, threading.Event]:
    return {name: threading.Event() for name in ("a", "b")}


@pytest.fixture
def started() -> dict[str, threading.Event]:
    return {name: threading.Event() for name in ("a", "b")}


def _connected(tchu: TchuFactory, registry: Registry, **worker_overrides: Any) -> Client:
    """Start a worker, and a client without heartbeats that has connected by one call."""
    tchu.worker(registry, fast_path=True, **worker_overrides)
    client = tchu.client(heartbeat=0, fast_path=True)  # the shortcut under test is the fast path's
    assert client.call("rpc.lead.echo", 0, timeout=WAIT) == 0  # connects (the I/O thread does that)
    return client


def _lead_once(
    client: Client, gates: dict[str, threading.Event], started: dict[str, threading.Event]
) -> None:
    """Make a call that leads (its reply cannot come before it waits) and wait till the I/O thread parks."""
    with ThreadPoolExecutor(1) as pool:
        opened = pool.submit(lambda: started["a"].wait(WAIT) and gates["a"].set())
        assert client.call("rpc.lead.gated", "a", timeout=WAIT) == "a"
        opened.result(timeout=WAIT)
    deadline = time.monotonic() + WAIT
    while not client._loop._parked:
        assert time.monotonic() < deadline, "the I/O thread never parked"
        time.sleep(0.001)


def test_a_call_alone_in_flight_is_read_on_its_callers_thread(
    tchu: TchuFactory,
    parked_for_an_hour: None,
    gates: dict[str, threading.Event],
    started: dict[str, threading.Event],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a client whose reply handler notes the thread that reads each reply
    readers: list[str] = []

    def noting(inflight: Any, callbacks: Any, limit: int, message: Any) -> None:
        readers.append(threading.current_thread().name)
        on_reply(inflight, callbacks, limit, message)

    monkeypatch.setattr(client_module, "on_reply", noting)
    client = _connected(tchu, _registry(gates, started))
    _lead_once(client, gates, started)
    readers.clear()
    seen: list[str] = []
    called = threading.Event()

    def on_progress(info: Any) -> None:
        seen.append(threading.current_thread().name)
        called.set()

    # When a call is the only one in flight and its handler reports progress
    result = client.call(
        "rpc.lead.progress",
        None,
        timeout=WAIT,
        on_progress=on_progress,
    )

    # Then the progress and the reply were read on the calling thread, and the progress callback
    # ran on the client's callback thread, never on a thread that reads the connection
    assert result == "done"
    assert readers == [threading.current_thread().name] * 2
    assert called.wait(WAIT)
    assert seen == ["tchu-client-callbacks"]


def test_call_async_after_a_lead_is_answered_though_the_io_thread_lingers(
    tchu: TchuFactory,
    parked_for_an_hour: None,
    gates: dict[str, threading.Event],
    started: dict[str, threading.Event],
) -> None:
    # Given a client whose I/O thread parked after a caller led the connection
    tchu.worker(_registry(gates, started))
    client = tchu.client(heartbeat=0, fast_path=True)  # the shortcut under test is the fast path's
    assert client.call("rpc.lead.echo", 1, timeout=WAIT) == 1

    # When a call is made that nobody waits for on its thread
    future = client.call_async("rpc.lead.echo", 2, timeout=WAIT)

    # Then the I/O thread wakes up and reads its reply
    assert future.result(timeout=WAIT + 5) == 2


def test_an_event_published_after_a_lead_is_confirmed(tchu: TchuFactory, parked_for_an_hour: None) -> None:
    registry = Registry()

    @registry.subscribe("rpc.lead.echo")
    def echo(data: Any) -> Any:
        return data

    tchu.worker(registry)
    client = tchu.client(heartbeat=0, fast_path=True)  # the shortcut under test is the fast path's
    assert client.call("rpc.lead.echo", 1, timeout=WAIT) == 1

    # When an event is published (its publisher leads too, until the broker's confirm)
    client.publish("lead.happened", {"n": 1}, timeout=WAIT)

    # Then a call after it still works
    assert client.call("rpc.lead.echo", 3, timeout=WAIT) == 3


def test_a_call_made_while_another_caller_leads_is_answered(
    tchu: TchuFactory,
    parked_for_an_hour: None,
    gates: dict[str, threading.Event],
    started: dict[str, threading.Event],
) -> None:
    client = _connected(tchu, _registry(gates, started), call_concurrency=2)
    with ThreadPoolExecutor(1) as pool:
        # Given a caller leading the connection while its handler is held
        leading: Future[Any] = pool.submit(client.call, "rpc.lead.gated", "a", timeout=WAIT)
        assert started["a"].wait(WAIT)

        # When another thread calls meanwhile
        # Then it gets its reply (read by the leader), and the leader gets its own later
        assert client.call("rpc.lead.echo", 1, timeout=WAIT) == 1
        gates["a"].set()
        assert leading.result(timeout=WAIT + 5) == "a"


def test_the_io_thread_takes_over_when_a_leader_leaves_calls_in_flight(
    tchu: TchuFactory,
    parked_for_an_hour: None,
    gates: dict[str, threading.Event],
    started: dict[str, threading.Event],
) -> None:
    client = _connected(tchu, _registry(gates, started), call_concurrency=2)
    with ThreadPoolExecutor(1) as pool:
        # Given a leading caller and a call_async in flight beside it
        leading: Future[Any] = pool.submit(client.call, "rpc.lead.gated", "a", timeout=WAIT)
        assert started["a"].wait(WAIT)
        other = client.call_async("rpc.lead.gated", "b", timeout=WAIT)
        assert started["b"].wait(WAIT)

        # When the leader's call ends first
        gates["a"].set()
        assert leading.result(timeout=WAIT + 5) == "a"

        # Then the other call's reply is still read (by the I/O thread)
        gates["b"].set()
        assert other.result(timeout=WAIT + 5) == "b"


def test_closing_the_client_ends_a_lead_with_connection_lost(
    tchu: TchuFactory,
    parked_for_an_hour: None,
    gates: dict[str, threading.Event],
    started: dict[str, threading.Event],
) -> None:
    client = _connected(tchu, _registry(gates, started))
    try:
        with ThreadPoolExecutor(1) as pool:
            # Given a caller leading the connection while its handler is held
            leading: Future[Any] = pool.submit(client.call, "rpc.lead.gated", "a", timeout=WAIT)
            assert started["a"].wait(WAIT)

            # When the client is closed
            client.close()

            # Then the call fails with ConnectionLost (not CallTimeout after its timeout)
            with pytest.raises(ConnectionLost):
                leading.result(timeout=WAIT / 2)
    finally:
        gates["a"].set()
