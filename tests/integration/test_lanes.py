"""Calls and events travel in separate lanes: a backlog of events never delays a call."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from amqp.exceptions import NotFound
from kombu import Connection

from tchu_rpc import Registry
from tchu_rpc.testing import TchuFactory


def test_calls_are_answered_while_an_event_backlog_drains(tchu: TchuFactory) -> None:
    backlog = 5000
    held_from = backlog // 2  # the events after this many wait until every call is answered
    admitted = handled = 0
    lock = threading.Condition()
    lane_held = threading.Event()
    calls_answered = threading.Event()
    finished: list[str] = []  # what completed, in order: each call's answer, the backlog's last event
    registry = Registry()

    @registry.subscribe("stock.changed")
    def on_stock(data: Any) -> None:
        nonlocal admitted, handled
        with lock:
            admitted += 1
            hold = admitted > held_from
        if hold:
            # The event lane stays busy, half the backlog still queued, until the calls are done: a
            # call queued behind the events would never be answered (it would time out instead).
            lane_held.set()
            calls_answered.wait(timeout=60)
        with lock:
            handled += 1
            if handled == backlog:
                finished.append("backlog handled")
            lock.notify_all()

    @registry.subscribe("rpc.stock.level")
    def level(data: Any) -> Any:
        with lock:
            return handled

    # Given 5,000 events queued for the service while none of its workers runs
    client = tchu.client()
    events_client = tchu.client()
    tchu.worker(registry, name="stock").stop()  # declares its queues
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: events_client.publish("stock.changed", i), range(backlog)))

    levels: list[int] = []

    def call() -> None:
        levels.append(client.call("rpc.stock.level", None, timeout=10))
        with lock:
            finished.append("call answered")

    # When the worker starts, 50 calls are made while the events flow, and 50 more once its event
    # lane is busy with an event and the rest of the backlog waits behind it
    worker = tchu.worker(registry, name="stock")
    try:
        for _ in range(50):
            call()
        assert lane_held.wait(timeout=60)
        for _ in range(50):
            call()
    finally:
        calls_answered.set()  # lets the rest of the backlog go, whatever happened to the calls

    # Then every call was answered before the backlog's end, none behind the waiting half of it
    assert levels == sorted(levels) and len(levels) == 100
    assert levels[-1] <= held_from
    with lock:
        assert lock.wait_for(lambda: handled >= backlog, timeout=60)
        assert finished == ["call answered"] * 100 + ["backlog handled"]
    # And every event is still handled exactly once
    worker.stop()
    assert handled == backlog


@pytest.mark.parametrize(
    ("pattern", "present", "absent"),
    [("user.created", "events", "calls"), ("rpc.user.get", "calls", "events")],
)
def test_a_service_declares_only_the_lanes_it_serves(
    tchu: TchuFactory, pattern: str, present: str, absent: str
) -> None:
    registry = Registry()
    registry.add(pattern, lambda data: None)
    worker = tchu.worker(registry, name="single")
    with Connection(tchu.broker_url) as conn:
        channel = conn.channel()
        channel.queue_declare(f"{worker.service}.{present}", passive=True)
        with pytest.raises(NotFound):
            channel.queue_declare(f"{worker.service}.{absent}", passive=True)


def test_events_keep_flowing_while_a_long_call_runs(tchu: TchuFactory) -> None:
    # With one call thread, a call handler runs on the worker's I/O thread; once it runs long, a
    # standby thread must serve the connection, or events (and heartbeats) would wait for it.
    all_events = threading.Event()
    call_running = threading.Event()
    seen: list[int] = []
    registry = Registry()

    @registry.subscribe("audit.logged")
    def on_audit(data: int) -> None:
        seen.append(data)
        if len(seen) == 20:
            all_events.set()

    @registry.subscribe("rpc.audit.slow")
    def slow(data: Any) -> Any:
        # Returns once every event arrived, which only happens if they flow while it runs.
        call_running.set()
        return all_events.wait(timeout=20)

    tchu.worker(registry, name="audit")
    client = tchu.client()
    future = client.call_async("rpc.audit.slow", None, timeout=30)
    assert call_running.wait(10)
    for i in range(20):
        client.publish("audit.logged", i)
    assert future.result(timeout=30) is True
    assert sorted(seen) == list(range(20))
