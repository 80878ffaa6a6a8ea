"""Publish arguments of what a worker sends for a delivery: replies, progress and copies of it."""

from __future__ import annotations

from typing import Any

from tchu_rpc import topology, wire
from tchu_rpc._amqp.properties import printable
from tchu_rpc._worker.messages import topic_of


def answer(message: Any, body: bytes, content_type: str, service: str) -> dict[str, Any]:
    """Return the publish arguments of a reply (or progress) to the call `message` from `service`."""
    reply_to = message.properties["reply_to"]
    return dict(
        body=body,
        exchange="",
        routing_key=reply_to,
        # RabbitMQ 3.10 returns a mandatory reply to direct reply-to as NO_ROUTE although it
        # delivered it; a reply queue of our own is checked.
        mandatory=not reply_to.startswith(topology.DIRECT_REPLY_TO),
        delivery_mode=1,
        correlation_id=message.properties["correlation_id"],
        app_id=service,  # who answered: a caller that gets two answers can say which services ran it
        content_type=content_type,
        content_encoding=wire.codec_of(content_type).content_encoding,
    )


def copy(message: Any, queue: str, extra: dict[str, Any]) -> dict[str, Any]:
    """Return the publish arguments of a copy of `message` to `queue`, with `extra` headers."""
    props = message.properties
    headers = dict(message.headers or {})
    headers[wire.HEADER_TOPIC] = topic_of(message)
    headers.update(extra)
    # printable: a malformed message's properties may hold bytes that are not UTF-8 (`properties`)
    return dict(
        body=message.body,
        exchange="",
        routing_key=queue,
        mandatory=True,
        delivery_mode=props.get("delivery_mode") or 2,
        headers=headers,
        message_id=printable(props.get("message_id")),
        correlation_id=printable(props.get("correlation_id")),
        reply_to=printable(props.get("reply_to")),
        content_type=printable(message.content_type or "application/octet-stream"),
        content_encoding=printable(message.content_encoding or "binary"),
    )
