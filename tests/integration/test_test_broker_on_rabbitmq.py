"""A test marked `tchu_rabbitmq` runs its `tchu_test_broker` on RabbitMQ: the same test, the real broker."""

from __future__ import annotations

import threading
from typing import Any

import msgspec
import pytest

from tchu_rpc import Registry, Retry, Topic
from tchu_rpc.testing import TestBroker


class Square(msgspec.Struct):
    n: int


square = Topic("rpc.math.square", request=Square, response=int)


@pytest.mark.tchu_rabbitmq
def test_marked_test_calls_and_retries_on_rabbitmq(tchu_test_broker: TestBroker) -> None:
    # Given a service on the broker of the test session, with a handler failing once
    assert tchu_test_broker.broker_url.startswith("amqp")
    runs: list[Any] = []
    done = threading.Event()
    registry = Registry()
    registry.add(square, lambda req: req.n * req.n)

    @registry.subscribe("math.done", retry=Retry(attempts=2, first_delay=0.05))
    def note(data: Any) -> None:
        runs.append(data)
        if len(runs) == 1:
            raise ValueError("once")
        done.set()

    tchu_test_broker.worker(registry, "math")
    client = tchu_test_broker.client()
    # When it is called and sent an event
    assert client.call(square, Square(n=7)) == 49
    client.publish("math.done", {"n": 7})
    # Then the broker's delay queue brings the retry back
    assert done.wait(10), runs
    assert len(runs) == 2
