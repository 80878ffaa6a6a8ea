"""The reply cache against the real Redis: a request delivered twice runs its handler once."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
import redis
from kombu import Connection, Consumer, Producer, Queue

from tchu_rpc import RedisReplyCache, Registry, ReplyCache, reply_cache, wire
from tchu_rpc.testing import TchuFactory, capture_logs

REDIS_URL = "redis://127.0.0.1:6379/0"
ITEM = b'{"item": 1}'
HOW_TO_START = (
    "No Redis on 127.0.0.1:6379 for the reply cache tests: start one (`redis-server --daemonize yes`)"
)


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1):
            pass
    except OSError as exc:
        pytest.fail(f"{HOW_TO_START} ({exc})", pytrace=False)
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    client.close()


@pytest.fixture
def cache(redis_client: redis.Redis) -> Iterator[RedisReplyCache]:
    """Yield a cache with a key prefix of its own; delete its keys afterwards."""
    prefix = f"tchu_rpc_test:{uuid.uuid4().hex}:"
    yield RedisReplyCache(redis_client, prefix=prefix)
    keys = list(redis_client.scan_iter(match=f"{prefix}*"))
    if keys:
        redis_client.delete(*keys)


def counting_registry(runs: list[Any]) -> Registry:
    registry = Registry()

    @registry.subscribe("rpc.orders.create")
    def create(data: Any) -> Any:
        runs.append(data)
        return {"order": len(runs)}

    @registry.subscribe("rpc.orders.fail")
    def fail(data: Any) -> Any:
        runs.append(data)
        raise ValueError("try again")

    return registry


def deliver_twice(
    tchu: TchuFactory, topic: str, message_id: str, bodies: tuple[bytes, bytes] = (b'{"item": 1}',) * 2
) -> list[tuple[Any, str]]:
    """Publish two requests with the same message id; return both replies (body, correlation id)."""
    replies: list[tuple[Any, str]] = []
    both = threading.Event()
    with Connection(tchu.broker_url) as conn:
        channel = conn.channel()
        reply_queue = Queue(f"tchu.reply.{tchu.prefix}", exclusive=True, auto_delete=True)

        def on_reply(message: Any) -> None:
            body = message.body  # py-amqp decodes a body that names a content encoding
            body = body.encode() if isinstance(body, str) else body
            replies.append((body, message.properties["correlation_id"]))
            if len(replies) == 2:
                both.set()

        with Consumer(channel, queues=[reply_queue], no_ack=True, on_message=on_reply):
            producer = Producer(channel)
            for body in bodies:
                producer.publish(
                    body,
                    exchange=tchu.settings.calls_exchange,
                    routing_key=topic,
                    message_id=message_id,
                    correlation_id=message_id,
                    reply_to=reply_queue.name,
                    content_type=wire.JSON,
                    content_encoding="utf-8",
                )
            while not both.is_set():
                conn.drain_events(timeout=10)
    return replies


def test_a_request_delivered_twice_runs_its_handler_once(tchu: TchuFactory, cache: RedisReplyCache) -> None:
    # Given a worker with a reply cache
    runs: list[Any] = []
    tchu.worker(counting_registry(runs), reply_cache=cache)
    message_id = uuid.uuid4().hex

    # When the same request (same message id) reaches it twice
    with capture_logs() as logs:
        replies = deliver_twice(tchu, "rpc.orders.create", message_id)

    # Then the handler ran once, and both deliveries got its reply
    assert runs == [{"item": 1}]
    expected = wire.encode(wire.codec_for("json"), wire.Result({"order": 1}), 1 << 20)
    assert replies == [(expected, message_id), (expected, message_id)]
    [hit] = [entry for entry in logs if entry["event"] == "reply_from_cache"]
    assert hit["message_id"] == message_id
    assert cache.get(_key(tchu, "rpc.orders.create", message_id, ITEM)) == (expected, wire.JSON)


def _key(tchu: TchuFactory, topic: str, message_id: str, body: bytes) -> str:
    # `deliver_twice` publishes without a user_id
    return reply_cache.key_of(f"{tchu.prefix}.svc", topic, None, message_id, body)


def test_one_message_id_with_another_body_is_not_answered_from_the_cache(
    tchu: TchuFactory, cache: RedisReplyCache
) -> None:
    # Given a caching worker
    runs: list[Any] = []
    tchu.worker(counting_registry(runs), reply_cache=cache)
    # When two calls share a message id (the publisher chooses it) but not their bodies
    replies = deliver_twice(tchu, "rpc.orders.create", "mine", (b'{"item": 1}', b'{"item": 2}'))
    # Then each ran, and the second caller got its own result, not the first one's
    assert runs == [{"item": 1}, {"item": 2}]
    assert [msgspec.json.decode(body)["result"] for body, _ in replies] == [{"order": 1}, {"order": 2}]


def test_a_cached_message_id_without_a_reply_address_is_dead_lettered_and_the_worker_serves_on(
    tchu: TchuFactory, cache: RedisReplyCache
) -> None:
    # Given a caching worker that answered a call
    runs: list[Any] = []
    worker = tchu.worker(counting_registry(runs), reply_cache=cache)
    message_id = uuid.uuid4().hex
    deliver_twice(tchu, "rpc.orders.create", message_id)
    # When a request with the same message id and body but no reply address arrives
    with Connection(tchu.broker_url) as conn:
        Producer(conn.channel()).publish(
            b'{"item": 1}',
            exchange=tchu.settings.calls_exchange,
            routing_key="rpc.orders.create",
            message_id=message_id,
            content_type=wire.JSON,
            content_encoding="utf-8",
        )
        # Then it is dead-lettered (nobody to answer), and the worker keeps serving on one connection
        dead = _get_dead(conn, f"{worker.service}.dead")
    assert "nobody to answer" in dead.headers[wire.HEADER_ERROR]
    generation = worker._loop.generation
    assert tchu.client().call("rpc.orders.create", {"n": 2}, timeout=5) == {"order": 2}
    assert worker._loop.generation == generation
    worker.stop(timeout=5)
    assert worker._settler.inflight == 0


def _get_dead(conn: Connection, queue: str, within: float = 10.0) -> Any:
    """Return the first message consumed from `queue`; a drain past `within` s raises a timeout."""
    got: list[Any] = []
    consumer = Consumer(conn.channel(), [Queue(queue, no_declare=True)], no_ack=True, on_message=got.append)
    with consumer:
        deadline = time.monotonic() + within
        while not got:
            conn.drain_events(timeout=max(0.01, deadline - time.monotonic()))
    return got[0]


def test_error_replies_are_not_cached(tchu: TchuFactory, cache: RedisReplyCache) -> None:
    runs: list[Any] = []
    tchu.worker(counting_registry(runs), reply_cache=cache)
    message_id = uuid.uuid4().hex
    replies = deliver_twice(tchu, "rpc.orders.fail", message_id)
    assert len(runs) == 2  # a retry of a failed call may succeed: it runs again
    assert all(b"try again" in body for body, _ in replies)
    assert cache.get(_key(tchu, "rpc.orders.fail", message_id, ITEM)) is None


def test_a_client_call_through_a_caching_worker_returns_the_result(
    tchu: TchuFactory, cache: RedisReplyCache
) -> None:
    runs: list[Any] = []
    tchu.worker(counting_registry(runs), reply_cache=cache)
    client = tchu.client()
    assert client.call("rpc.orders.create", {"n": 1}, timeout=5) == {"order": 1}
    assert client.call("rpc.orders.create", {"n": 2}, timeout=5) == {"order": 2}  # new message ids


def test_an_unreachable_cache_is_bypassed_and_logged(tchu: TchuFactory) -> None:
    # Given a cache whose Redis does not answer (nothing listens on port 1)
    broken = RedisReplyCache(url="redis://127.0.0.1:1/0", timeout=0.5)
    runs: list[Any] = []
    tchu.worker(counting_registry(runs), reply_cache=broken)

    # Then calls still work, and the worker says the cache failed
    with capture_logs() as logs:
        assert tchu.client().call("rpc.orders.create", {}, timeout=5) == {"order": 1}
    failures = [entry["op"] for entry in logs if entry["event"] == "reply_cache_failed"]
    assert failures == ["get", "put"]


def test_redis_reply_cache_round_trips_and_expires(cache: RedisReplyCache, redis_client: redis.Redis) -> None:
    assert isinstance(cache, ReplyCache)
    assert cache.get("missing") is None
    cache.put("m1", b"\x00body\nwith newline", wire.MSGPACK, ttl=60)
    assert cache.get("m1") == (b"\x00body\nwith newline", wire.MSGPACK)
    assert 0 < redis_client.pttl(f"{cache.prefix}m1") <= 60_000


def test_a_worker_makes_its_cache_from_the_reply_cache_url(
    tchu: TchuFactory, redis_client: redis.Redis
) -> None:
    # The way a standalone worker (`tchu-rpc worker --reply-cache URL`) gets its cache.
    runs: list[Any] = []
    tchu.worker(counting_registry(runs), reply_cache_url=REDIS_URL)
    message_id = uuid.uuid4().hex
    try:
        replies = deliver_twice(tchu, "rpc.orders.create", message_id)
    finally:
        redis_client.delete("tchu_rpc:reply:" + _key(tchu, "rpc.orders.create", message_id, ITEM))
    assert runs == [{"item": 1}]
    assert replies[0] == replies[1]
