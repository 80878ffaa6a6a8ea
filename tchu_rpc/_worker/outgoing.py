"""Publish arguments of what a worker sends for a delivery: replies, progress and copies of it.

What a copy carries (a dead letter, a retry, a counted redelivery, a replay): the original's body,
its message id, correlation id, reply address, content type and encoding, and of its headers only
what `carried` allows: tchu_rpc's own `x-tchu-*` headers and the application's headers. Never
`CC` or `BCC` (RabbitMQ would route the copy to the queues they name: back into the service's own
queue, a loop, or into another service's queue as if this worker had sent it), nor any other `x-`
header (the broker's and plugins' own: `x-death`, `x-delivery-count`, `x-delay`, ...), nor a
header whose name is not text or whose value cannot be sent again (`encodable`). The copy's `app_id` is
`wire.COPY_APP_ID` and its `user_id` the worker's login (RabbitMQ checks it), which together mark
it as the worker's own (`messages.trusted_copy`); the original's checked `user_id` travels in
`x-tchu-user-id`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

from amqp.serialization import dumps

from tchu_rpc import topology, wire
from tchu_rpc._amqp.properties import printable
from tchu_rpc._worker.messages import republished, topic_of, user_of

#: Headers that only a copy made by this worker may set: on anything else they are a publisher's
#: claim, and dropped from its copies.
TRUSTED_ONLY: Final = frozenset(
    {
        wire.HEADER_TOPIC,
        wire.HEADER_DELIVERIES,
        wire.HEADER_USER_ID,
        wire.HEADER_RETRY_HANDLER,
        wire.HEADER_ATTEMPT,
        wire.HEADER_ATTEMPT_ERRORS,
    }
)
_ROUTING: Final = frozenset({"cc", "bcc"})


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


def copy(message: Any, queue: str, extra: dict[str, Any], login: str | None) -> dict[str, Any]:
    """Return the publish arguments of a copy of `message` to `queue`, with `extra` headers.

    `login` is the user name of the connection that publishes it (its `user_id`, checked by RabbitMQ).
    """
    props = message.properties
    headers = carried(message.headers, trusted=republished(message))
    headers[wire.HEADER_TOPIC] = topic_of(message)
    user = user_of(message)
    if user is not None:
        headers[wire.HEADER_USER_ID] = printable(user)
    headers.update(extra)
    # printable: a malformed message's properties may hold bytes that are not UTF-8 (`properties`)
    return dict(
        body=message.body,
        exchange="",
        routing_key=queue,
        mandatory=True,
        delivery_mode=props.get("delivery_mode") or 2,
        headers=encodable(headers),
        message_id=printable(props.get("message_id")),
        correlation_id=printable(props.get("correlation_id")),
        reply_to=printable(props.get("reply_to")),
        content_type=printable(message.content_type or "application/octet-stream"),
        content_encoding=printable(message.content_encoding or "binary"),
        app_id=wire.COPY_APP_ID,
        user_id=login,
    )


def carried(headers: Mapping[Any, Any] | None, *, trusted: bool) -> dict[str, Any]:
    """Return the headers of an original that a copy of it carries (see the module).

    `trusted`: the original is itself a copy of ours, whose `TRUSTED_ONLY` headers may be kept.
    """
    if not headers:
        return {}
    return {
        name: value
        for name, value in headers.items()
        if isinstance(name, str) and _carried(name.lower()) and (trusted or name not in TRUSTED_ONLY)
    }


def _carried(lower: str) -> bool:
    if lower.startswith("x-"):
        return lower.startswith("x-tchu-")
    return lower not in _ROUTING


def encodable(headers: dict[str, Any]) -> dict[str, Any]:
    """Return `headers` less those that cannot be sent again.

    That is what py-amqp cannot encode (a decimal it decoded as `Decimal("1E+2")`, a table ~600 deep:
    it reads one stack frame a level and writes with two), and what RabbitMQ refuses (a NaN or
    infinite float closes the publishing connection).
    """
    if _sendable(headers):
        return headers
    return {name: value for name, value in headers.items() if _sendable({name: value})}


def _sendable(table: dict[str, Any]) -> bool:
    try:
        dumps("F", (table,))
        return _finite(table)
    except Exception:  # RecursionError included
        return False


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(item) for item in value.values())
    if isinstance(value, list | tuple):
        return all(_finite(item) for item in value)
    return True
