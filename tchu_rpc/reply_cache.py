"""Opt-in reply cache keyed by request: a redelivered call is answered without running again.

A worker acks a request together with its reply (one transaction), so a worker that dies after
the handler ran but before that commit leaves the request to be redelivered, and its handler runs a
second time. With `Worker(reply_cache=...)`, the worker stores each successful reply under the
request's key before publishing it, and answers a request whose key it already has from the cache.

The key (`key_of`) is a digest of the service, the topic, the publisher's checked `user_id`, the
message id and the body: a message id is the publisher's to choose, so it alone would let one
caller (or a forger) receive the reply to another caller's call. Only the same request, from the
same login, to the same service and topic, is answered from the cache. A request without a reply
address is never looked up (it is dead-lettered: nobody to answer).

Errors replies are not cached (a retry may succeed). A cache that fails is logged and bypassed: the
handler runs, as without a cache.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from tchu_rpc.errors import ConfigError
from tchu_rpc.log import get_logger

logger = get_logger(__name__)

if TYPE_CHECKING:
    import redis

_SEPARATOR = b"\n"  # between the content type (which has no newline) and the body


@runtime_checkable
class ReplyCache(Protocol):
    """Where a worker keeps encoded replies by request key (`key_of`); must be thread-safe."""

    def get(self, key: str) -> tuple[bytes, str] | None:
        """Return the stored reply body and its content type, or None."""

    def put(self, key: str, body: bytes, content_type: str, ttl: float) -> None:
        """Store a reply body and its content type for `ttl` seconds."""


class RedisReplyCache:
    """A `ReplyCache` in Redis: one key per reply, expiring by itself.

    Args:
        client: a `redis.Redis` client (bytes responses); made from `url` when not given.
        url: Redis URL for the client made here.
        prefix: prepended to request keys (`key_of`, which name the service) to form Redis keys.
        timeout: socket timeout of the client made here, in seconds; a slow cache delays calls.

    Raises:
        ConfigError: redis-py is not installed (`pip install 'tchu-rpc[redis]'`).
    """

    def __init__(
        self,
        client: redis.Redis | None = None,
        *,
        url: str = "redis://127.0.0.1:6379/0",
        prefix: str = "tchu_rpc:reply:",
        timeout: float = 2.0,
    ) -> None:
        if client is None:
            try:
                import redis
            except ImportError as exc:
                raise ConfigError("RedisReplyCache needs redis-py: pip install 'tchu-rpc[redis]'") from exc
            client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self.client = client
        self.prefix = prefix

    def get(self, key: str) -> tuple[bytes, str] | None:
        """Return the stored reply body and its content type, or None."""
        value: Any = self.client.get(self.prefix + key)
        if not isinstance(value, bytes) or _SEPARATOR not in value:
            return None
        content_type, _, body = value.partition(_SEPARATOR)
        return body, content_type.decode("ascii", "replace")

    def put(self, key: str, body: bytes, content_type: str, ttl: float) -> None:
        """Store a reply body and its content type for `ttl` seconds."""
        value = content_type.encode("ascii", "replace") + _SEPARATOR + body
        self.client.set(self.prefix + key, value, px=max(1, round(ttl * 1000)))

    def close(self) -> None:
        """Close the client's connections."""
        self.client.close()

    def __repr__(self) -> str:
        return f"<RedisReplyCache prefix={self.prefix!r}>"


def key_of(service: str, topic: str, user: str | None, message_id: str, body: bytes) -> str:
    """Return the cache key of a request (see the module): a hex digest, the same for a redelivery."""
    digest = hashlib.blake2b(digest_size=20)
    for part in (service, topic, user or "", message_id):
        data = part.encode("utf-8", "surrogateescape")
        digest.update(len(data).to_bytes(4, "big") + data)
    digest.update(body)
    return digest.hexdigest()


def lookup(cache: ReplyCache, key: str, context: dict[str, Any]) -> tuple[bytes, str] | None:
    """Return the cached reply of `key`; log a hit, and log and bypass a failing cache."""
    try:
        cached = cache.get(key)
    except Exception as exc:
        _failed("get", exc, context)
        return None
    if cached is not None:
        logger.warning("reply_from_cache", **context)  # a redelivery, absorbed
    return cached


def store(cache: ReplyCache, key: str, body: bytes, content_type: str, ttl: float) -> None:
    """Put a reply in the cache; log a failure and carry on (the reply is still sent)."""
    try:
        cache.put(key, body, content_type, ttl)
    except Exception as exc:
        _failed("put", exc, {"key": key})


def _failed(op: str, exc: Exception, context: dict[str, Any]) -> None:
    logger.warning("reply_cache_failed", op=op, error=str(exc), error_type=type(exc).__name__, **context)
