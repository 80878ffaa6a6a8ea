"""Calls and events travel in separate lanes: a backlog of events never delays a call."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from amqp.exceptions import NotFound
from kombu import Connection

from tchu_rpc import Registry
from tchu_rpc.testing import TchuFactory


def test_calls_are_answered_while_an_event_backlog_drains(tchu: TchuFactory) -> None:
    handled = 0
    lock = threading.Condition()
    registry = Registry()

    @registry.subscribe("stock.changed")
    def on_stock(data: Any) -> None:
        nonlocal handled
        time.sleep(0.002)  # the handler's work: 2 ms per event
        with lock:
            handled += 1
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
        list(pool.map(lambda i: events_client.publish("stock.changed", i), range(5000)))

    # When the worker starts and 100 calls are made while it works through the backlog
    worker = tchu.worker(registry, name="stock")
    latencies = []
    levels = []
    for _ in range(100):
        started = time.perf_counter()
        levels.append(client.call("rpc.stock.level", None, timeout=10))
        latencies.append(time.perf_counter() - started)

    # Then every call was answered before the backlog was gone: none waited behind the events
    assert len(levels) == 100
    assert levels[-1] < 5000
    # And every event is still handled exactly once
    with lock:
        assert lock.wait_for(lambda: handled >= 5000, timeout=60)
    worker.stop()
    assert handled == 5000
    latencies.sort()
    print(
        f"call latency during the backlog: p50 {latencies[49] * 1000:.1f} ms, "
        f"p99 {latencies[98] * 1000:.1f} ms"
    )


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
