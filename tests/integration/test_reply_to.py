"""`reply_to` is an address to answer, not a routing key to any queue on the broker.

Issue 11 (E): a request whose reply_to named another queue (here a victim's durable queue) was
answered into that queue. A reply address is direct reply-to (`amq.rabbitmq.reply-to...`) or a
client's own reply queue (`tchu.reply.<hex>`); any other request is dead-lettered with the reason.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import pytest
from kombu import Connection, Producer, Queue

from tchu_rpc import Registry
from tchu_rpc.testing import TchuFactory

WAIT = 10.0
HEADER_ERROR = "x-tchu-error"  # the reason a dead-lettered message carries (see the README)


def depth(url: str, queue: str) -> int:
    """Return how many messages are ready in `queue` (which must exist)."""
    with Connection(url, connect_timeout=5) as conn:
        return int(conn.default_channel.queue_declare(queue, passive=True).message_count)


@pytest.fixture
def victim(tchu: TchuFactory) -> Iterator[str]:
    """Yield the name of a durable queue of someone else's, deleted at the end."""
    name = f"{tchu.prefix}.victim.{uuid.uuid4().hex[:8]}"
    with Connection(tchu.broker_url, connect_timeout=5) as conn:
        Queue(name, durable=True, auto_delete=False)(conn.default_channel).declare()
        yield name
        conn.default_channel.queue_delete(name)


@pytest.mark.timeout(30)
def test_a_call_whose_reply_to_is_not_a_reply_address_is_dead_lettered_not_answered(
    tchu: TchuFactory, victim: str
) -> None:
    # Given a worker serving rpc.reply.echo
    registry = Registry()
    registry.add("rpc.reply.echo", lambda data: data)
    worker = tchu.worker(registry)
    dead = f"{worker.service}.dead"

    # When a request arrives whose reply_to names the victim's queue
    with Connection(tchu.broker_url, connect_timeout=5) as conn:
        Producer(conn.default_channel).publish(
            json.dumps({"n": 1}).encode(),
            exchange=tchu.settings.calls_exchange,
            routing_key="rpc.reply.echo",
            content_type="application/json",
            content_encoding="utf-8",
            correlation_id="c-1",
            message_id="m-1",
            reply_to=victim,
        )
    deadline = time.monotonic() + WAIT
    while not (depth(tchu.broker_url, dead) or depth(tchu.broker_url, victim)):
        assert time.monotonic() < deadline, "the request was neither answered nor dead-lettered"
        time.sleep(0.02)  # the broker's queues: nothing signals this process

    # Then nothing was written into the victim's queue
    assert depth(tchu.broker_url, victim) == 0, "the worker answered into the victim's queue"
    # And the request is in the service's dead-letter queue, with a reason that names reply_to
    with Connection(tchu.broker_url, connect_timeout=5) as conn:
        message = conn.default_channel.basic_get(dead, no_ack=True)
    assert message is not None
    assert message.properties.get("message_id") == "m-1"
    assert "reply_to" in str(message.headers.get(HEADER_ERROR, ""))
