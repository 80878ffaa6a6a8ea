"""A worker settles calls as AMQP transactions: its publishes and the ack are committed together.

RabbitMQ closes a channel that sends any method while a `tx.commit` is still completing (it waits
for queues to confirm persistent messages), so a `Publisher` holds later transactions back until
the commit-ok and then commits them together.
"""

from __future__ import annotations

import base64
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from kombu import Connection, Consumer, Producer, Queue

from tchu_rpc import Registry, Settings
from tchu_rpc._amqp.publisher import Publisher
from tchu_rpc._worker.settle import Job, Settler
from tchu_rpc.testing import TchuFactory, capture_logs

WAIT = 10.0


@pytest.fixture
def durable_queue(tchu_broker_url: str) -> Iterator[str]:
    name = f"t{uuid.uuid4().hex[:10]}.tx"
    with Connection(tchu_broker_url, connect_timeout=5) as conn:
        conn.channel().queue_declare(name, durable=True, auto_delete=False)
        yield name
        conn.channel().queue_delete(name)


def _returned(*args: Any) -> None:
    raise AssertionError(f"unexpected basic.return: {args}")


@pytest.fixture
def tx_publisher(tchu_broker_url: str) -> Iterator[Publisher]:
    """Yield a transactional publisher on a channel of its own connection."""
    with Connection(tchu_broker_url, connect_timeout=5) as conn:
        conn.connect()
        yield Publisher(conn, conn.channel(), on_return=_returned, transactional=True)


def _drain_until(publisher: Publisher, done: Callable[[], bool]) -> None:
    """Read the publisher's connection until `done()`, for WAIT seconds at most."""
    deadline = time.monotonic() + WAIT
    while not done() and time.monotonic() < deadline:
        try:
            publisher.channel.connection.drain_events(timeout=0.5)
        except TimeoutError:
            continue


def test_transactions_behind_a_commit_wait_for_it_then_commit_together(
    tx_publisher: Publisher, durable_queue: str
) -> None:
    # Given a transactional publisher whose first commit holds a persistent message to a durable
    # queue (the broker completes that commit only once the queue has it on disk)
    publisher, channel = tx_publisher, tx_publisher.channel
    committed: list[str] = []

    def group(name: str) -> None:
        publisher.transact(
            lambda: publisher.publish(
                name.encode(), exchange="", routing_key=durable_queue, delivery_mode=2, mandatory=True
            ),
            lambda: committed.append(name),
        )

    # When three transactions are made at once
    for name in ("a", "b", "c"):
        group(name)
    assert committed == [], "nothing is committed before the broker says so"
    _drain_until(publisher, lambda: len(committed) == 3)

    # Then all three are committed in order, on a channel that is still open
    assert committed == ["a", "b", "c"]
    assert channel.is_open
    bodies = []
    while (message := channel.basic_get(durable_queue, no_ack=True)) is not None:
        bodies.append(message.body)
    assert bodies == [b"a", b"b", b"c"]


def test_publish_on_a_transactional_channel_is_committed_by_itself(
    tx_publisher: Publisher, durable_queue: str
) -> None:
    confirmed: list[bool] = []

    tx_publisher.publish(b"x", exchange="", routing_key=durable_queue, on_confirm=confirmed.append)
    _drain_until(tx_publisher, lambda: bool(confirmed))

    assert confirmed == [True]
    assert tx_publisher.channel.basic_get(durable_queue, no_ack=True).body == b"x"


def test_publisher_on_memory_transport_settles_at_once() -> None:
    with Connection("memory://") as conn:
        channel = conn.channel()
        publisher = Publisher(conn, channel, on_return=_returned, transactional=True)
        order: list[str] = []

        publisher.transact(lambda: order.append("writes"), lambda: order.append("committed"))

        assert not publisher.transactional
        assert order == ["writes", "committed"]


def test_concurrent_calls_settle_and_leave_nothing_unacked(tchu: TchuFactory) -> None:
    # Given a worker with four call threads whose handlers finish together, so that their
    # transactions meet a commit still in flight
    registry = Registry()
    barrier = threading.Barrier(4, timeout=WAIT)

    @registry.subscribe("rpc.tx.echo")
    def echo(data: int) -> int:
        if data < 8:
            barrier.wait()
        return data

    worker = tchu.worker(registry, call_concurrency=4)
    client = tchu.client()

    # When 40 calls are made from 8 threads
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda n: client.call("rpc.tx.echo", n, timeout=WAIT), range(40)))

    # Then each is answered, and once the worker stopped no request is left to redeliver
    assert results == list(range(40))
    worker.stop()
    with Connection(tchu.broker_url, connect_timeout=5) as conn:
        calls = conn.channel().queue_declare(f"{worker.service}.calls", passive=True)
        assert calls.message_count == 0


def test_stop_after_calls_cancels_at_once_without_waiting_out_the_grace(tchu: TchuFactory) -> None:
    # Given a worker that has just settled calls on its transactional channel
    registry = Registry()

    @registry.subscribe("rpc.tx.echo")
    def echo(data: int) -> int:
        return data

    worker = tchu.worker(registry, shutdown_grace=3.0)
    client = tchu.client()
    assert [client.call("rpc.tx.echo", n, timeout=WAIT) for n in range(5)] == list(range(5))

    # When it stops
    with capture_logs() as logs:
        worker.stop()

    # Then the grace never ran out (a cancel sent while a commit is under way, or held back with
    # the commit's frames, would close the channel or wait for an answer that never comes)
    assert "shutdown_grace_expired" not in [entry["event"] for entry in logs]


def test_without_the_fast_path_calls_are_settled_through_py_amqps_public_api(tchu: TchuFactory) -> None:
    # Given a worker and a client with the fast path off
    registry = Registry()
    registry.subscribe("rpc.public.echo")(lambda data: data)
    worker = tchu.worker(registry, fast_path=False)
    client = tchu.client(fast_path=False)

    # When calls are made, one at a time and several at once
    assert client.call("rpc.public.echo", 1, timeout=5) == 1
    futures = [client.call_async("rpc.public.echo", n, timeout=5) for n in range(20)]

    # Then each is answered, and neither side took the fast path: no transactions, no own frames
    assert [f.result(timeout=10) for f in futures] == list(range(20))
    assert not worker._loop.fast and not client._loop.fast
    assert not worker._settler.publishers["call"].transactional


class RefusingRelay:
    """Stands in for the relay of a worker whose relayed replies the broker refuses (a nack)."""

    def send(self, send: dict[str, Any], on_done: Callable[[bool], None] | None) -> None:
        assert on_done is not None
        on_done(False)


def _address_on(node: str) -> str:
    """Return a direct reply-to address of a caller on `node` (a pid term naming that node)."""
    name = node.encode()
    term = bytes([131, 88, 118]) + struct.pack(">H", len(name)) + name + bytes(12)
    return f"amq.rabbitmq.reply-to.{base64.b64encode(term).decode()}.key"


def test_a_request_requeued_after_a_refused_relay_is_committed_at_once(
    tchu_broker_url: str, durable_queue: str
) -> None:
    # Given a request delivered on a transactional call channel, and nothing else to commit there
    settler = Settler("svc", Settings(), handoff=lambda command: command())
    settler.relay = RefusingRelay()  # type: ignore[assignment]
    redelivered: list[Any] = []
    with Connection(tchu_broker_url, connect_timeout=5) as conn:
        conn.connect()
        channel = conn.channel()
        settler.publishers["call"] = Publisher(conn, channel, on_return=_returned, transactional=True)
        settler.node = "rabbit@here"
        Producer(conn.channel()).publish(b"request", exchange="", routing_key=durable_queue)
        jobs: list[Job] = []
        Consumer(
            channel,
            [Queue(durable_queue, no_declare=True)],
            callbacks=[lambda body, message: (redelivered if jobs else jobs).append(Job("call", 1, message))],
            prefetch_count=1,
        ).consume()
        _drain_until(settler.publishers["call"], lambda: bool(jobs))
        settler.received()

        # When its reply, to a caller on another node, is refused by the relay
        reply = {"body": b"", "exchange": "", "routing_key": _address_on("rabbit@there")}
        settler.reply_then_ack(jobs[0], reply, [])

        # Then the request is requeued at once (not at a next commit that may never come), and the
        # settler counts it settled once its requeue is committed
        _drain_until(settler.publishers["call"], lambda: bool(redelivered))
        assert [job.message.delivery_info["redelivered"] for job in redelivered] == [True]
        assert settler.inflight == 0
