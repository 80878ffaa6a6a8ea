"""Open a lane of a service on a new connection: its channel, its queue, its publisher, its consumer."""

from __future__ import annotations

import codecs
from collections.abc import Callable
from typing import Any

from kombu import Connection, Consumer

from tchu_rpc import topology
from tchu_rpc._amqp.publisher import OnReturn, Publisher
from tchu_rpc.config import Settings
from tchu_rpc.registry import Kind, Registry


def open_lane(
    conn: Connection,
    kind: Kind,
    service: str,
    settings: Settings,
    registry: Registry,
    on_return: OnReturn,
    on_message: Callable[[Any], None],
    on_decode_error: Callable[[Any, BaseException], None],
    fast: bool,
) -> tuple[Consumer, Publisher]:
    """Declare `kind`'s queue of `service` on a channel of its own and consume it; return both ends."""
    channel = conn.channel()
    patterns = registry.patterns(kind)
    if kind == "call":
        queue = topology.call_queue(service, settings, patterns)
        prefetch = settings.call_concurrency
    else:
        queue = topology.event_queue(service, settings, patterns)
        prefetch = settings.event_prefetch
    queue(channel).declare()
    # Calls settle as transactions (reply and ack committed together, see `publisher`); events,
    # mostly acked with nothing to publish, need no round trip for that.
    publisher = Publisher(conn, channel, on_return=on_return, transactional=kind == "call", fast=fast)
    consumer = Consumer(
        channel, queues=[queue], auto_declare=False, on_message=on_message, on_decode_error=on_decode_error
    )
    consumer.qos(prefetch_count=prefetch)
    consumer.consume()
    return consumer, publisher


def raw_body(message: Any) -> None:
    """Give `message` back the bytes that came: py-amqp decodes bodies that name a content encoding."""
    if isinstance(message.body, str):
        message.body = message.body.encode(_text_encoding(message.content_encoding))


def _text_encoding(name: str | None) -> str:
    try:
        return codecs.lookup(name or "utf-8").name
    except LookupError:
        return "utf-8"
