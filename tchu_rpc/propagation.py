"""Context that follows a request across services: set it once, every message made under it carries it.

```python
with context(request_id="r-42", tenant="acme"):
    client.call("rpc.orders.create", order)      # the request carries the context
```

A handler runs under the context its message came with, so the calls and publishes it makes carry
the context on (contextvars: per thread and per asyncio task): a request id set by the first caller
is seen by a handler two services down the chain (`current_delivery().context`). Values are JSON
values, 16 KiB at most encoded.

Context is what a publisher *says*: never proof of identity. The identity the broker vouches for is
`current_delivery().user_id`, the AMQP `user_id` property RabbitMQ checks against the publishing
connection's login.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from types import MappingProxyType
from typing import Any

import msgspec

from tchu_rpc.errors import ArgumentTypeError, ConfigError
from tchu_rpc.wire import non_finite

#: The most a context (or a message's `headers=`) may take once encoded.
MAX_BYTES = 16 * 1024
_EMPTY: Mapping[str, Any] = MappingProxyType({})
_encode = msgspec.json.Encoder().encode

#: The context of this thread or task, and its JSON (encoded once, sent with every message).
_current: ContextVar[tuple[Mapping[str, Any], bytes | None]] = ContextVar(
    "tchu_rpc_context", default=(_EMPTY, None)
)


@contextmanager
def context(**values: Any) -> Iterator[Mapping[str, Any]]:
    """Add `values` to the context of the messages made inside the block; yield the whole context."""
    merged = {**_current.get()[0], **values}
    token = _current.set((MappingProxyType(merged), checked_json(merged, "context")))
    try:
        yield _current.get()[0]
    finally:
        _current.reset(token)


def current_context() -> Mapping[str, Any]:
    """Return the context messages made now carry (empty outside any `context` block or handler)."""
    return _current.get()[0]


def checked_json(values: Mapping[str, Any], what: str) -> bytes:
    """Return `values` as JSON; refuse what is not a str-keyed JSON mapping of at most `MAX_BYTES`."""
    if not isinstance(values, Mapping):
        raise ArgumentTypeError(f"{what} must be a mapping, not {type(values).__name__}")
    for key in values:
        if not isinstance(key, str) or not key or len(key) > 128:
            raise ConfigError(f"{what} keys must be strings of 1-128 characters, got {key!r}")
    try:
        encoded = _encode(values)
    except (TypeError, msgspec.EncodeError) as exc:
        raise ArgumentTypeError(f"{what} values must be JSON values: {exc}") from exc
    if b"null" in encoded and non_finite(values):
        raise ArgumentTypeError(f"{what} values must be JSON values: NaN and infinity have no JSON form")
    if len(encoded) > MAX_BYTES:
        raise ConfigError(f"{what} takes {len(encoded)} bytes as JSON; the limit is {MAX_BYTES}")
    return encoded


def active() -> bool:
    """Tell whether this thread or task has a context (messages made now carry it)."""
    return _current.get()[1] is not None


def enter(encoded: str | bytes | None) -> Token[tuple[Mapping[str, Any], bytes | None]]:
    """Make a received message's context (its JSON) current for its handler; return the reset token."""
    values: Any = None
    if encoded is not None:
        try:
            values = msgspec.json.decode(encoded)
        except (msgspec.DecodeError, TypeError):
            values = None
    if not isinstance(values, dict) or encoded is None:
        return _current.set((_EMPTY, None))  # no context, or one that is not one: none carried on
    raw = encoded.encode() if isinstance(encoded, str) else bytes(encoded)
    return _current.set((MappingProxyType(values), raw))


def leave(token: Token[tuple[Mapping[str, Any], bytes | None]]) -> None:
    """Go back to the context before `enter`."""
    _current.reset(token)
