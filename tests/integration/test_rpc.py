"""Calls against the real broker: round trips, concurrency, errors, routing and timeouts."""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec
import pytest
from kombu import Connection

from tchu_rpc import (
    CallTimeout,
    NoRoute,
    Registry,
    RemoteError,
    RpcError,
    current_delivery,
    wire,
)
from tchu_rpc.testing import TchuFactory, capture_logs


def users_registry() -> Registry:
    registry = Registry()

    @registry.subscribe("rpc.users.get")
    def get_user(data: Any) -> Any:
        return {"id": data["id"], "name": f"user-{data['id']}"}

    @registry.subscribe("rpc.users.fail")
    def fail(data: Any) -> Any:
        raise ValueError(f"bad id {data['id']}")

    @registry.subscribe("rpc.users.refuse")
    def refuse(data: Any) -> Any:
        raise RpcError("not allowed", code="forbidden", details={"id": data["id"]})

    return registry


def test_call_returns_the_handlers_result(tchu: TchuFactory) -> None:
    tchu.worker(users_registry())
    with tchu.client() as client:
        assert client.call("rpc.users.get", {"id": 1}, timeout=5) == {"id": 1, "name": "user-1"}


def test_call_async_keeps_200_calls_in_flight_from_one_client(tchu: TchuFactory) -> None:
    tchu.worker(users_registry(), call_concurrency=4)
    client = tchu.client()
    futures = [client.call_async("rpc.users.get", {"id": i}, timeout=30) for i in range(200)]
    assert [f.result(timeout=35)["id"] for f in futures] == list(range(200))


def test_16_threads_share_one_client_and_every_result_is_theirs(tchu: TchuFactory) -> None:
    tchu.worker(users_registry(), call_concurrency=4)
    client = tchu.client()

    def caller(thread: int) -> list[bool]:
        ids = [thread * 1000 + i for i in range(100)]
        return [client.call("rpc.users.get", {"id": i}, timeout=30)["id"] == i for i in ids]

    with ThreadPoolExecutor(16) as pool:
        results = [ok for oks in pool.map(caller, range(16)) for ok in oks]
    assert len(results) == 1600
    assert all(results)


def test_call_raises_remote_error_when_handler_fails(tchu: TchuFactory) -> None:
    tchu.worker(users_registry())
    client = tchu.client()
    with pytest.raises(RemoteError) as info:
        client.call("rpc.users.fail", {"id": 7}, timeout=5)
    assert info.value.type == "ValueError"
    assert info.value.message == "bad id 7"
    # The worker keeps serving after a failing handler.
    assert client.call("rpc.users.get", {"id": 8}, timeout=5)["id"] == 8


def test_call_raises_remote_error_with_code_and_details_for_rpc_error(tchu: TchuFactory) -> None:
    tchu.worker(users_registry())
    with pytest.raises(RemoteError) as info:
        tchu.client().call("rpc.users.refuse", {"id": 3}, timeout=5)
    assert (info.value.type, info.value.message) == ("RpcError", "not allowed")
    assert info.value.code == "forbidden"
    assert info.value.details == {"id": 3}


def test_call_to_unbound_topic_raises_no_route_long_before_its_timeout(tchu: TchuFactory) -> None:
    tchu.worker(users_registry())
    client = tchu.client()
    started = time.monotonic()
    with pytest.raises(NoRoute, match=r"rpc\.nobody\.home"):
        client.call("rpc.nobody.home", {}, timeout=30)
    # NoRoute comes from the broker's basic.return, not from the 30 s timeout.
    assert time.monotonic() - started < 5


def test_call_times_out_and_the_late_reply_is_dropped(tchu: TchuFactory) -> None:
    release = threading.Event()
    registry = Registry()

    @registry.subscribe("rpc.slow")
    def slow(data: Any) -> Any:
        release.wait(10)
        return "late"

    @registry.subscribe("rpc.fast")
    def fast(data: Any) -> Any:
        return "fast"

    tchu.worker(registry)
    client = tchu.client()
    with pytest.raises(CallTimeout):
        client.call("rpc.slow", {}, timeout=0.5)
    with capture_logs() as logs:
        release.set()
        # The late reply arrives before this answer: one worker thread, one queue, in order.
        assert client.call("rpc.fast", {}, timeout=5) == "fast"
    dropped = [e for e in logs if e["event"] == "reply_dropped"]
    assert len(dropped) == 1
    assert dropped[0]["call_outcome"] == "CallTimeout"


def test_call_matching_two_handlers_gets_an_error_naming_both(tchu: TchuFactory) -> None:
    registry = Registry()

    @registry.subscribe("rpc.orders.*")
    def any_order(data: Any) -> Any:
        return "any"

    @registry.subscribe("rpc.orders.get")
    def get_order(data: Any) -> Any:
        return "get"

    tchu.worker(registry)
    with pytest.raises(RemoteError) as info:
        tchu.client().call("rpc.orders.get", {}, timeout=5)
    assert info.value.type == "AmbiguousTopic"
    assert "any_order" in info.value.message and "get_order" in info.value.message


class Point(msgspec.Struct):
    x: int
    y: int


def test_typed_handler_gets_a_struct_and_bad_shapes_get_a_decode_error(tchu: TchuFactory) -> None:
    registry = Registry()

    @registry.subscribe("rpc.geo.norm")
    def norm(p: Point) -> int:
        return abs(p.x) + abs(p.y)

    tchu.worker(registry)
    client = tchu.client()
    assert client.call("rpc.geo.norm", {"x": 3, "y": -4}, timeout=5) == 7
    with pytest.raises(RemoteError) as info:
        client.call("rpc.geo.norm", {"x": "three"}, timeout=5)
    assert info.value.type == "DecodeError"


def test_handler_sees_its_delivery(tchu: TchuFactory) -> None:
    registry = Registry()

    @registry.subscribe("rpc.whoami")
    def whoami(data: Any) -> Any:
        delivery = current_delivery()
        assert delivery is not None
        return [delivery.topic, delivery.redelivered, delivery.correlation_id is not None]

    tchu.worker(registry)
    assert tchu.client().call("rpc.whoami", None, timeout=5) == ["rpc.whoami", False, True]
    assert current_delivery() is None


def test_garbage_body_goes_to_the_dead_letter_queue_and_the_next_call_works(
    tchu: TchuFactory,
) -> None:
    worker = tchu.worker(users_registry())
    client = tchu.client()
    # Given a body that is not JSON, published for a topic the service serves
    with Connection(tchu.broker_url) as conn:
        producer = conn.Producer()
        producer.publish(
            b"\xff\x00not json",
            exchange=tchu.settings.calls_exchange,
            routing_key="rpc.users.get",
            content_type="application/json",
            content_encoding="utf-8",
            headers={"note": "garbage"},
        )
        # Then the next call is still answered
        assert client.call("rpc.users.get", {"id": 5}, timeout=5)["id"] == 5
        # And the garbage waits in the dead-letter queue with the reason
        dead = _get_one(conn, f"{worker.service}.dead")
    assert dead.body == b"\xff\x00not json"
    assert "DecodeError" in dead.headers["x-tchu-error"]
    assert dead.headers["note"] == "garbage"


def test_request_past_its_deadline_is_not_run(tchu: TchuFactory) -> None:
    runs: list[Any] = []
    registry = Registry()

    @registry.subscribe("rpc.count")
    def count(data: Any) -> Any:
        runs.append(data)
        return len(runs)

    worker = tchu.worker(registry)
    client = tchu.client()
    with Connection(tchu.broker_url) as conn:
        conn.Producer().publish(
            b'"stale"',
            exchange=tchu.settings.calls_exchange,
            routing_key="rpc.count",
            content_type="application/json",
            content_encoding="utf-8",
            reply_to="amq.rabbitmq.reply-to.invalid",
            correlation_id="stale-1",
            headers={"x-tchu-timeout": -1.0},  # the caller had no time left when it published
        )
    # Calls are served in order by one thread: once this answers, the stale one was seen.
    assert client.call("rpc.count", "fresh", timeout=5) == 1
    assert runs == ["fresh"]
    assert worker.service


def test_long_handler_keeps_its_connection_through_missed_heartbeats(tchu: TchuFactory) -> None:
    runs: list[int] = []
    registry = Registry()

    @registry.subscribe("rpc.long")
    def long_job(data: Any) -> Any:
        runs.append(1)
        time.sleep(3.5)  # the work itself: three heartbeat intervals of 1 s
        return "done"

    with capture_logs() as logs:
        tchu.worker(registry, heartbeat=1)
        assert tchu.client(heartbeat=1).call("rpc.long", None, timeout=15) == "done"
    assert runs == [1]
    assert not [e for e in logs if e["event"] == "connection_lost"]


def _get_one(conn: Connection, queue: str) -> Any:
    channel = conn.channel()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        message = channel.basic_get(queue, no_ack=True)
        if message is not None:
            return message
        time.sleep(0.05)  # polling a queue with basic_get; there is no event to await
    raise AssertionError(f"nothing arrived in {queue}")


def test_call_delivered_up_to_the_limit_is_dead_lettered_and_answered(tchu: TchuFactory) -> None:
    runs: list[Any] = []
    registry = Registry()

    @registry.subscribe("rpc.poison")
    def poison(data: Any) -> Any:
        runs.append(data)
        return "ran"

    worker = tchu.worker(registry, delivery_limit=3)
    with Connection(tchu.broker_url) as conn:
        channel = conn.channel()
        replies = channel.queue_declare(f"tchu.reply.{uuid.uuid4().hex}", exclusive=True).queue
        # Given a request the worker re-published after counting three deliveries without an ack
        conn.Producer().publish(
            b'"boom"',
            exchange="",
            routing_key=f"{worker.service}.calls",
            content_type="application/json",
            content_encoding="utf-8",
            reply_to=replies,
            correlation_id="poison-1",
            headers={"x-tchu-deliveries": 3, "x-tchu-topic": "rpc.poison"},
            app_id=wire.COPY_APP_ID,  # a worker's own copy: marked, and published with its login
            user_id=conn.userid,
        )
        reply = _get_one(conn, replies)
        dead = _get_one(conn, f"{worker.service}.dead")
    # Then the caller is told, the handler did not run, and the message is kept with the reason
    assert "DeliveryLimitExceeded" in reply.body
    assert runs == []
    assert "delivery limit" in dead.headers["x-tchu-error"]
    assert dead.headers["x-tchu-topic"] == "rpc.poison"


@pytest.mark.parametrize("marks", [{}, {"app_id": wire.COPY_APP_ID}], ids=["unmarked", "no-user-id"])
def test_copies_forged_by_the_default_exchange_are_refused(tchu: TchuFactory, marks: dict[str, Any]) -> None:
    # A publisher allowed on the default exchange must not reach a handler by naming its topic in a
    # header, nor reset a poison message's count: a copy of the worker's says app_id and its login.
    ran: list[str] = []
    registry = Registry()

    @registry.subscribe("rpc.admin.wipe")
    def admin(data: Any) -> Any:
        ran.append("admin")
        return "wiped"

    worker = tchu.worker(registry)
    with Connection(tchu.broker_url) as conn:
        channel = conn.channel()
        replies = channel.queue_declare(f"tchu.reply.{uuid.uuid4().hex}", exclusive=True).queue
        # Given a request put straight into the calls queue, dressed as the worker's copy
        conn.Producer().publish(
            b'"now"',
            exchange="",
            routing_key=f"{worker.service}.calls",
            content_type="application/json",
            content_encoding="utf-8",
            reply_to=replies,
            correlation_id="forged-2",
            headers={"x-tchu-topic": "rpc.admin.wipe", "x-tchu-user-id": "admin"},
            **marks,
        )
        reply = _get_one(conn, replies)
        dead = _get_one(conn, f"{worker.service}.dead")
    # Then the handler did not run, the caller is told why, and one dead letter says so
    assert ran == []
    assert "UntrustedCopy" in reply.body
    assert dead.headers["x-tchu-error"].startswith("UntrustedCopy: published into the queue by the default")
    # and the letter carries none of the publisher's claims: no topic, no identity
    assert dead.headers["x-tchu-topic"] == f"{worker.service}.calls"
    assert "x-tchu-user-id" not in dead.headers
    assert (dead.properties["app_id"], dead.properties["user_id"]) == (wire.COPY_APP_ID, conn.userid)
    # And an ordinary call is answered right after
    assert tchu.client().call("rpc.admin.wipe", {}, timeout=5) == "wiped"


def test_worker_on_quorum_queues_answers_calls(tchu: TchuFactory) -> None:
    tchu.worker(users_registry(), queue_type="quorum")
    assert tchu.client().call("rpc.users.get", {"id": 4}, timeout=5)["id"] == 4


def test_topic_and_delivery_headers_from_a_publisher_are_not_trusted(tchu: TchuFactory) -> None:
    # A publisher allowed one routing key must not reach another handler by naming it in a header.
    ran: list[str] = []
    registry = Registry()

    @registry.subscribe("rpc.public.echo")
    def public(data: Any) -> Any:
        ran.append("public")
        return data

    @registry.subscribe("rpc.admin.wipe")
    def admin(data: Any) -> Any:
        ran.append("admin")
        return "wiped"

    tchu.worker(registry, delivery_limit=2)
    with Connection(tchu.broker_url) as conn:
        channel = conn.channel()
        replies = channel.queue_declare(f"tchu.reply.{uuid.uuid4().hex}", exclusive=True).queue
        conn.Producer().publish(
            b'"hello"',
            exchange=tchu.settings.calls_exchange,
            routing_key="rpc.public.echo",
            content_type="application/json",
            content_encoding="utf-8",
            reply_to=replies,
            correlation_id="forged-1",
            headers={"x-tchu-topic": "rpc.admin.wipe", "x-tchu-deliveries": 9, "x-delivery-count": 9},
        )
        reply = _get_one(conn, replies)
    assert ran == ["public"]
    assert "hello" in reply.body


def test_settled_calls_do_not_keep_their_deadlines(tchu: TchuFactory) -> None:
    # Memory stays bounded by the calls in flight, not by the calls of the last `timeout` seconds.
    tchu.worker(users_registry(), call_concurrency=4)
    client = tchu.client()
    for start in range(0, 2000, 200):
        futures = [
            client.call_async("rpc.users.get", {"id": i}, timeout=60) for i in range(start, start + 200)
        ]
        assert [f.result(timeout=30)["id"] for f in futures] == list(range(start, start + 200))
    assert client.call("rpc.users.get", {"id": 0}, timeout=5)["id"] == 0
    assert len(client._inflight._deadlines) <= 2 * 1 + 256 + 200
