"""Deliveries settled from their consumer callbacks (dead letters, counted copies) on py-amqp's path."""

from __future__ import annotations

import time

import pytest
from kombu import Connection

from tchu_rpc import Registry, wire
from tchu_rpc.testing import TchuFactory

BURST = 1500


def _depth(tchu: TchuFactory, queue: str) -> int:
    with Connection(tchu.broker_url, connect_timeout=5) as conn:
        return int(conn.default_channel.queue_declare(queue, passive=True).message_count)


@pytest.mark.timeout(120)
def test_a_burst_refused_in_its_callbacks_is_dead_lettered_without_recursing_on_py_amqps_path(
    tchu: TchuFactory,
) -> None:
    # Given a service's events queue holding many messages it refuses as they arrive (put there by
    # the default exchange, not as the worker's copies), and a worker reading through py-amqp
    registry = Registry()
    registry.subscribe("burst.*")(lambda data: None)
    tchu.worker(registry, "burst", fast_path=False).stop()
    queue = f"{tchu.service('burst')}.events"
    with Connection(tchu.broker_url, connect_timeout=5) as conn:
        producer = conn.Producer()
        for _ in range(BURST):
            producer.publish(b"{}", exchange="", routing_key=queue, content_type=wire.JSON)
    # When the worker starts with many of them prefetched: each refusal publishes a dead letter, and
    # py-amqp's publish reads the socket first (it delivered the next message inside this callback,
    # once per message waiting: a RecursionError that dropped the connection, again and again)
    worker = tchu.worker(registry, "burst", fast_path=False, event_prefetch=1000)
    # Then every message is dead-lettered once, on the worker's first connection
    deadline = time.monotonic() + 90
    while _depth(tchu, f"{tchu.service('burst')}.dead") < BURST:
        assert time.monotonic() < deadline, "not every message was dead-lettered"
        time.sleep(0.1)  # polling a queue's depth: the broker sends no event for it
    assert _depth(tchu, f"{tchu.service('burst')}.dead") == BURST
    assert _depth(tchu, queue) == 0
    assert worker._loop.generation == 1
