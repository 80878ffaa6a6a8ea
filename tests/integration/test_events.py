"""Broadcast events against the real broker: fan-out across services, sharing within one."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from tchu_rpc import Registry
from tchu_rpc.testing import TchuFactory


class Inbox:
    """Collect events and wake a waiter when a marker event arrives."""

    def __init__(self, lock: threading.Condition | None = None) -> None:
        self.seen: list[Any] = []
        self.lock = lock or threading.Condition()
        self.marker = threading.Event()

    def __call__(self, data: Any) -> None:
        with self.lock:
            if data == "marker":
                self.marker.set()
            else:
                self.seen.append(data)
            self.lock.notify_all()


def inbox_registry(pattern: str, inbox: Inbox) -> Registry:
    registry = Registry()
    registry.add(pattern, inbox)
    return registry


def test_two_services_bound_to_a_pattern_each_get_one_copy(tchu: TchuFactory) -> None:
    billing, mailer = Inbox(), Inbox()
    tchu.worker(inbox_registry("user.*", billing), name="billing")
    tchu.worker(inbox_registry("user.*", mailer), name="mailer")
    client = tchu.client()
    for i in range(20):
        client.publish("user.created", {"id": i})
    client.publish("user.marker", "marker")
    # Each queue is FIFO and served by one thread: the marker comes after every earlier event.
    assert billing.marker.wait(10) and mailer.marker.wait(10)
    expected = [{"id": i} for i in range(20)]
    assert billing.seen == expected
    assert mailer.seen == expected


def test_workers_of_one_service_share_events_without_duplicates(tchu: TchuFactory) -> None:
    shared = threading.Condition()
    first, second = Inbox(shared), Inbox(shared)
    tchu.worker(inbox_registry("order.#", first), name="orders", event_prefetch=1)
    tchu.worker(inbox_registry("order.#", second), name="orders", event_prefetch=1)
    client = tchu.client()
    for i in range(200):
        client.publish("order.placed.eu", i)
    with shared:
        assert shared.wait_for(lambda: len(first.seen) + len(second.seen) >= 200, timeout=20)
    counts = Counter(first.seen + second.seen)
    assert sorted(counts) == list(range(200))
    assert set(counts.values()) == {1}


def test_several_handlers_matching_one_event_all_run(tchu: TchuFactory) -> None:
    exact, wild = Inbox(), Inbox()
    registry = Registry()
    registry.add("invoice.paid", exact)
    registry.add("invoice.#", wild)
    tchu.worker(registry, name="accounts")
    client = tchu.client()
    client.publish("invoice.paid", {"n": 1})
    client.publish("invoice.paid", "marker")
    assert exact.marker.wait(10) and wild.marker.wait(10)
    assert exact.seen == [{"n": 1}]
    assert wild.seen == [{"n": 1}]
