"""Check what a caller passes to `call`, `call_async` and `publish` before anything is sent."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from tchu_rpc import wire
from tchu_rpc.contracts import Topic
from tchu_rpc.errors import ArgumentTypeError, ConfigError, DecodeError, TopicError, ValidationError
from tchu_rpc.propagation import _current as _current_context
from tchu_rpc.propagation import checked_json
from tchu_rpc.registry import default_kind

#: The longest timeout RabbitMQ takes as a message's `expiration` (a longer one closes the connection).
MAX_TIMEOUT = 315_360_000.0


def checked_timeout(timeout: float | None, default: float, name: str = "timeout") -> float:
    """Return `timeout`, or `default` for None; refuse what is not a positive number of seconds.

    Raises:
        ArgumentTypeError: not an int or a float (a bool or a string is refused, not converted).
        ConfigError: not finite, not above 0, or over `MAX_TIMEOUT`.
    """
    if timeout is None:
        return default
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        kind = type(timeout).__name__
        raise ArgumentTypeError(f"{name} must be a number of seconds, not {kind}: {timeout!r}")
    if not math.isfinite(timeout) or not 0 < timeout <= MAX_TIMEOUT:
        raise ConfigError(
            f"{name} must be a positive number of seconds, at most {MAX_TIMEOUT:.0f} (RabbitMQ's limit "
            f"for a message's expiration), got {timeout!r}"
        )
    return float(timeout)


def call_arguments(
    timeout: float | None,
    default: float,
    max_timeout: float | None,
    idempotent: object,
    on_progress: Callable[[Any], None] | None,
) -> tuple[float, float]:
    """Return a call's timeout and how far progress may move its deadline (`max_timeout` or inf)."""
    timeout = checked_timeout(timeout, default)
    latest = math.inf if max_timeout is None else checked_timeout(max_timeout, 0.0, "max_timeout")
    if latest < timeout:
        raise ConfigError(f"max_timeout ({max_timeout!r}) must be at least timeout ({timeout!r})")
    if not isinstance(idempotent, bool):
        raise ArgumentTypeError(f"idempotent must be True or False, not {idempotent!r}")
    if on_progress is not None and not callable(on_progress):
        raise ArgumentTypeError(f"on_progress must be callable, not {type(on_progress).__name__}")
    return timeout, latest


def event_topic(topic: object, allow_call_topic: object) -> None:
    """Refuse to publish a call's topic as an event unless `allow_call_topic` is True."""
    if isinstance(topic, str) and default_kind(topic) == "call" and allow_call_topic is not True:
        raise TopicError(
            f"topic {topic!r} names a call (its first word is 'rpc'): use call(), or publish it as an "
            "event with allow_call_topic=True"
        )


def typed(topic: str | Topic[Any, Any], returns: Any) -> tuple[Any, Topic[Any, Any] | None]:
    """Return the topic's name and its contract: a `Topic`'s, one for `returns=`, or None (plain)."""
    if isinstance(topic, Topic):
        if returns is not None:
            raise ConfigError(f"returns= is for plain topics: {topic.name!r} declares its response type")
        return topic.name, topic
    if returns is None:
        return topic, None  # plain: checked by the client (once per topic), nothing more per call
    if not isinstance(topic, str):
        raise TopicError(f"topic must be a str or a Topic, not {type(topic).__name__}: {topic!r}")
    return topic, Topic(topic, response=returns)


def check_request(codec: wire.Codec, body: bytes, contract: Topic[Any, Any]) -> None:
    """Raise `ValidationError` unless `body` decodes into the topic's request type."""
    try:
        codec.decode(body, contract.request)
    except DecodeError as exc:
        raise ValidationError(
            f"request for {contract.name!r} does not fit {_named(contract.request)}: {exc}"
        ) from None


def _named(kind: Any) -> str:
    return getattr(kind, "__name__", repr(kind))


def outgoing_headers(headers: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Return the AMQP headers that carry a caller's `headers=` and its context, or None."""
    encoded_context = _current_context.get()[1]
    if headers is None and encoded_context is None:
        return None  # the usual call: nothing more per message
    extra: dict[str, Any] = {}
    if headers is not None:
        extra[wire.HEADER_HEADERS] = checked_json(headers, "headers").decode()
    if encoded_context is not None:
        extra[wire.HEADER_CONTEXT] = encoded_context.decode()
    return extra
