"""What a delivery says, read once: its topic, how often it was delivered, the `Delivery` a handler sees."""

from __future__ import annotations

import time
from typing import Any, Final

import msgspec

from tchu_rpc import wire
from tchu_rpc.delivery import Delivery
from tchu_rpc.registry import Kind

#: Set in a delivery's `delivery_info` once `trusted_copy` has found it to be the worker's own copy.
_TRUSTED: Final = "tchu_trusted_copy"


def previous_deliveries(message: Any, *, classic: bool) -> int:
    """Count how often the broker delivered this message before without an ack.

    Headers a publisher could forge count only where the broker or this worker set them: the quorum
    count on quorum queues, ours on a copy the worker re-published itself (see `republished`).
    """
    headers = message.headers or {}
    quorum = headers.get(wire.HEADER_QUORUM_COUNT)
    if not classic and isinstance(quorum, int) and quorum >= 0:
        return quorum
    counted = headers.get(wire.HEADER_DELIVERIES, 0) if republished(message) else 0
    counted = counted if isinstance(counted, int) and counted >= 0 else 0
    return counted + int(classic and bool(message.delivery_info.get("redelivered")))


def topic_of(message: Any) -> str:
    """Return the message's topic (kept in a header when the worker re-published it)."""
    topic = (message.headers or {}).get(wire.HEADER_TOPIC) if republished(message) else None
    return topic if isinstance(topic, str) else str(message.delivery_info.get("routing_key", ""))


def republished(message: Any) -> bool:
    """Tell whether `message` is a copy this worker made (see `trusted_copy`): its headers are ours."""
    return bool(message.delivery_info.get(_TRUSTED))


def user_of(message: Any) -> str | None:
    """Return the `user_id` RabbitMQ checked when `message` (or the original of our copy) was published."""
    if republished(message):
        user = (message.headers or {}).get(wire.HEADER_USER_ID)
        return user if isinstance(user, str) else None
    user = message.properties.get("user_id")
    return user if isinstance(user, str) else None


def trusted_copy(message: Any, login: str | None) -> str | None:
    """Mark a delivery that came by the default exchange as the worker's own copy, or say why not.

    Returns None for a message that came through an exchange or is our copy, else the reason it is
    refused. Publishers go through the calls and events exchanges; the worker's copies (dead
    letters, retries, counted redeliveries, replays) come back by the default exchange, carrying a
    topic, counts and a caller's identity in headers. Anyone allowed to write to the default exchange
    can publish into the queue too, so a copy must also say `app_id` = `wire.COPY_APP_ID` with
    `user_id` = this worker's login: RabbitMQ refuses a `user_id` that is not the publisher's own
    login, so only a client logged in as the worker can make one. Trusting a topic header on anything
    else would let a publisher allowed one routing key (RabbitMQ topic permissions) reach the
    handler of another, and reset a poison message's delivery count.
    """
    info = message.delivery_info
    if info.get("exchange") != "":
        return None
    props = message.properties
    user = props.get("user_id")
    if props.get("app_id") == wire.COPY_APP_ID and user == login:
        info[_TRUSTED] = True
        return None
    return (
        f"published into the queue by the default exchange (user {user!r}, app_id "
        f"{props.get('app_id')!r}), not as this worker's own copy (user {login!r}); "
        "publish through the calls or events exchange, and replay dead letters with the service's login"
    )


def delivery_of(kind: Kind, message: Any, received: float | None = None) -> Delivery:
    """Describe a kombu message as the `Delivery` a handler can see.

    A call's deadline is the time the caller had left when it published (`HEADER_TIMEOUT`), counted
    from when this worker received it on its own clock: no two clocks are compared, so clock skew
    between caller and worker costs nothing. Time in the queue is the broker's to bound (the request's
    `expiration`): a request is delivered only before it expires.
    """
    props = message.properties
    info = message.delivery_info
    headers = message.headers or {}
    remaining = headers.get(wire.HEADER_TIMEOUT)
    deadline = None
    if isinstance(remaining, int | float) and not isinstance(remaining, bool):
        waited = 0.0 if received is None else time.monotonic() - received
        deadline = time.time() - waited + float(remaining)
    return Delivery(
        kind=kind,
        topic=topic_of(message),
        message_id=props.get("message_id"),
        correlation_id=props.get("correlation_id"),
        redelivered=bool(info.get("redelivered")) or previous_deliveries(message, classic=False) > 0,
        delivery_tag=info.get("delivery_tag"),
        deadline=deadline,
        headers=headers,
        caller_headers=_json_header(headers, wire.HEADER_HEADERS),
        context=_json_header(headers, wire.HEADER_CONTEXT),
        user_id=user_of(message),
    )


def _json_header(headers: dict[str, Any], name: str) -> dict[str, Any]:
    raw = headers.get(name)
    if raw is None:
        return {}
    try:
        value = msgspec.json.decode(raw)
    except (msgspec.DecodeError, TypeError):
        return {}  # not JSON: a foreign publisher's header, ignored
    return value if isinstance(value, dict) else {}


def describe(message: Any) -> dict[str, Any]:
    """Return a message's log context: topic, correlation id, delivery tag, redelivered."""
    info = message.delivery_info
    return {
        "topic": topic_of(message),
        "correlation_id": message.properties.get("correlation_id"),
        "delivery_tag": info.get("delivery_tag"),
        "redelivered": bool(info.get("redelivered")),
    }
