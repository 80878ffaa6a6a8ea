"""tchu_rpc changes nothing in py-amqp for connections other than its own."""

from __future__ import annotations

import uuid

import amqp
import pytest
from amqp import serialization
from kombu import Connection

from tchu_rpc import Registry
from tchu_rpc.testing import TchuFactory


@pytest.mark.timeout(30)
def test_a_plain_connection_opened_after_a_client_decodes_as_py_amqp_alone_does(tchu: TchuFactory) -> None:
    # Given a worker and a client that have made a call (both connected and reading)
    registry = Registry()
    registry.subscribe("rpc.plain.echo")(lambda data: data)
    tchu.worker(registry)
    assert tchu.client().call("rpc.plain.echo", 1, timeout=5) == 1
    assert serialization.PROPERTY_CLASSES[60] is serialization.decode_properties_basic

    # When a plain py-amqp connection of the same process receives a message whose content type is
    # not UTF-8
    queue = f"tchu.test.plain.{uuid.uuid4().hex}"
    with Connection(tchu.broker_url, connect_timeout=5) as conn:
        channel = conn.channel()
        channel.queue_declare(queue, exclusive=True)
        channel.basic_publish(amqp.Message(b"x", content_type=b"\xff"), routing_key=queue)
        channel.basic_consume(queue, callback=lambda message: None)

        # Then it fails exactly as py-amqp does without tchu_rpc: strict UTF-8, an error
        with pytest.raises(UnicodeDecodeError):
            conn.drain_events(timeout=5)
        conn.collect()  # the connection is unusable now: release its socket without a word
