"""A broker restart (a private node, shared by the tests of this module) loses no event, and
clients and workers recover from it without a process restart."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import pytest
from fault_support import is_quorum, queue_depth
from rabbit_node import RabbitNode

from tchu_rpc import CallTimeout, Client, ConnectionLost, Registry
from tchu_rpc.testing import TchuFactory

EVENTS = 300
RECOVER_WITHIN = 10.0


@pytest.fixture
def node_tchu(rabbit_node: RabbitNode) -> Iterator[TchuFactory]:
    """Yield a factory of isolated clients and workers on the private node."""
    factory = TchuFactory(rabbit_node.url)
    yield factory
    factory.cleanup()


class Inbox:
    """Collect the `n` of each event received; `wait(count)` blocks until that many distinct arrived."""

    def __init__(self) -> None:
        self.seen: list[int] = []
        self._changed = threading.Condition()

    def add(self, data: dict[str, Any]) -> None:
        with self._changed:
            self.seen.append(data["n"])
            self._changed.notify_all()

    def wait(self, count: int, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: len(set(self.seen)) >= count, timeout)


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_confirmed_events_for_a_stopped_worker_survive_a_broker_restart(
    node_tchu: TchuFactory, rabbit_node: RabbitNode, queue_type: str
) -> None:
    node_tchu.settings = node_tchu.settings.replace(queue_type=queue_type)
    inbox = Inbox()
    registry = Registry()
    registry.subscribe("restart.happened")(inbox.add)

    # Given the service's queues declared and its worker stopped
    node_tchu.worker(registry, "events").stop()
    # And EVENTS events published, each confirmed by the broker
    with node_tchu.client() as client:
        for n in range(EVENTS):
            client.publish("restart.happened", {"n": n}, timeout=10)
    service = node_tchu.service("events")
    assert queue_depth(rabbit_node.url, f"{service}.events") == EVENTS
    assert is_quorum(rabbit_node.url, f"{service}.events") == (queue_type == "quorum")

    # When the broker restarts
    rabbit_node.restart()
    kept = queue_depth(rabbit_node.url, f"{service}.events")

    # Then a new worker receives every one of them
    node_tchu.worker(registry, "events")
    assert inbox.wait(EVENTS, 30), f"{kept} kept by the broker; received {len(set(inbox.seen))} of {EVENTS}"
    assert sorted(set(inbox.seen)) == list(range(EVENTS))
    assert kept == EVENTS


def _ping_registry(topic: str) -> Registry:
    registry = Registry()

    @registry.subscribe(topic)
    def ping(data: int) -> int:
        return data + 1

    return registry


def _recovered(client: Client, topic: str, since: float) -> float:
    """Call `topic` until a call succeeds; return when it did, seconds after `since`."""
    failures: list[str] = []
    while True:
        try:
            assert client.call(topic, 41, timeout=1.0) == 42
            return time.monotonic() - since
        except (ConnectionLost, CallTimeout) as exc:
            failures.append(type(exc).__name__)
        assert time.monotonic() - since < RECOVER_WITHIN, f"{topic}: no call succeeded; failures: {failures}"


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_workers_and_client_recover_from_a_broker_restart_without_a_process_restart(
    node_tchu: TchuFactory, rabbit_node: RabbitNode
) -> None:
    # A worker with one call thread runs handlers on its I/O thread, one with four on a lane of
    # threads: one restart (what takes the time here) serves to test both.
    topics = {concurrency: f"rpc.restart.ping{concurrency}" for concurrency in (1, 4)}

    # Given a worker per call concurrency and a client that have talked
    for concurrency, topic in topics.items():
        node_tchu.worker(_ping_registry(topic), f"recover{concurrency}", call_concurrency=concurrency)
    client = node_tchu.client()
    for topic in topics.values():
        assert client.call(topic, 1, timeout=5) == 2

    # When the broker restarts
    rabbit_node.restart()
    back = time.monotonic()

    # Then the same workers and client serve calls again within RECOVER_WITHIN seconds
    for topic in topics.values():
        assert _recovered(client, topic, back) < RECOVER_WITHIN
        assert [client.call(topic, n, timeout=5) for n in range(20)] == list(range(1, 21))


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_pipelined_events_across_a_broker_restart_are_each_settled_and_the_confirmed_delivered(
    node_tchu: TchuFactory, rabbit_node: RabbitNode
) -> None:
    inbox = Inbox()
    registry = Registry()
    registry.subscribe("restart.pipelined")(inbox.add)
    node_tchu.worker(registry, "pipelined", event_prefetch=200)
    client = node_tchu.client()
    restart = threading.Thread(target=rabbit_node.restart, name="restart")

    # Given 10,000 events published in batches of 100 with their confirms pipelined, each batch
    # awaited before the next, and the broker restarted after the 20th: batches meet the stop,
    # the outage (held, then sent on reconnection) and the new broker
    sent: list[futures.Future[None]] = []
    during = 0  # batches published while the restart was under way
    for first in range(0, 10_000, 100):
        batch = client.publish_many(
            (("restart.pipelined", {"n": n}) for n in range(first, first + 100)), timeout=60
        )
        sent += batch
        if first == 2000:
            restart.start()
        during += restart.is_alive()
        # While the broker is away a batch is held, not confirmed: pace the next one instead
        futures.wait(batch, timeout=0.2 if restart.is_alive() else 90)
    restart.join(120)
    assert during > 1, "no batch went out while the broker restarted"

    # Then each event's future settled: confirmed, or failed with an error of its own
    assert all(f.done() for f in sent)
    failed = [f.exception() for f in sent if f.exception() is not None]
    assert all(isinstance(error, ConnectionLost) for error in failed), failed[:3]
    confirmed = {n for n, f in enumerate(sent) if f.exception() is None}
    # And every confirmed event is delivered (at least once), the client having reconnected
    with inbox._changed:
        delivered = inbox._changed.wait_for(lambda: confirmed <= set(inbox.seen), 90)
    assert delivered, f"{len(confirmed - set(inbox.seen))} confirmed events never delivered"
    assert client._loop.generation >= 2
