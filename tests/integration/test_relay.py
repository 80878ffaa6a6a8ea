"""A reply to a caller whose node is gone costs the worker nothing but a connection of the relay's.

RabbitMQ 3.10 closes the whole connection that publishes a reply to a direct reply-to address
whose node is not running (541 INTERNAL_ERROR). Here such an address is made on one node: a real
address with its node part replaced by one no node has (`dead_address`), the same bytes a caller
on a dead node of a cluster leaves behind. Before the relay, the worker answered it on the
connection it consumes on: the broker closed that connection and every request fetched on it was
redelivered, its handler run again.
"""

from __future__ import annotations

import base64
import json
import struct
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import amqp
import pytest
from kombu import Connection, Producer

from tchu_rpc import Registry, Worker
from tchu_rpc.testing import TchuFactory, capture_logs

WAIT = 15.0
PREFIX = "amq.rabbitmq.reply-to."


def dead_address(url: str) -> str:
    """Return a direct reply-to address on a node that does not exist (`reply@1`)."""
    with Connection(url, connect_timeout=5) as conn:
        conn.connect()
        channel = conn.channel()
        returned: list[Any] = []
        channel.events["basic_return"].add(lambda *args: returned.append(args[-1]))
        channel.basic_consume(PREFIX[:-1], no_ack=True, callback=lambda message: None)
        message = amqp.Message(b"", reply_to=PREFIX[:-1])
        channel.basic_publish(message, "", "tchu.nowhere.test", mandatory=True)
        while not returned:
            conn.drain_events(timeout=5)
    pid, _, key = returned[0].properties["reply_to"][len(PREFIX) :].partition(".")
    term = base64.b64decode(pid)
    length = struct.unpack_from(">H", term, 3)[0]  # NEW_PID_EXT, then ATOM_UTF8_EXT's length
    node = b"reply@1"
    forged = term[:3] + struct.pack(">H", len(node)) + node + term[5 + length :]
    return PREFIX + base64.b64encode(forged).decode() + "." + key


def send_request(url: str, exchange: str, topic: str, n: int, reply_to: str) -> None:
    """Publish a call request for `topic` with data `n`, as a client does, answering to `reply_to`."""
    with Connection(url, connect_timeout=5) as conn:
        Producer(conn.default_channel).publish(
            json.dumps(n).encode(),
            exchange=exchange,
            routing_key=topic,
            content_type="application/json",
            content_encoding="utf-8",
            correlation_id=f"c-{n}",
            message_id=f"m-{n}",
            reply_to=reply_to,
        )


def _wait_for(logs: list[dict[str, Any]], event: str, count: int) -> None:
    deadline = time.monotonic() + WAIT
    while sum(entry["event"] == event for entry in logs) < count:
        assert time.monotonic() < deadline, f"fewer than {count} {event} within {WAIT}s"
        time.sleep(0.01)  # the worker's threads log: nothing signals this one


def _counting_registry(
    runs: Counter[int], release: threading.Event, entered: threading.Semaphore
) -> Registry:
    registry = Registry()

    @registry.subscribe("rpc.relay.hold")
    def hold(n: int) -> int:
        runs[n] += 1
        entered.release()
        release.wait(WAIT)
        return n * 2

    @registry.subscribe("rpc.relay.echo")
    def echo(n: int) -> int:
        runs[n] += 1
        return n * 2

    return registry


@pytest.mark.timeout(60)
def test_replies_to_a_dead_node_cost_no_other_request_a_second_run(tchu: TchuFactory) -> None:
    # Given a worker with six calls of live callers in its handlers, unacked
    runs: Counter[int] = Counter()
    release, entered = threading.Event(), threading.Semaphore(0)
    worker = tchu.worker(_counting_registry(runs, release, entered), call_concurrency=8)
    generation = worker._loop.generation
    client = tchu.client()
    live = [client.call_async("rpc.relay.hold", n, timeout=WAIT) for n in range(6)]
    for _ in live:
        assert entered.acquire(timeout=WAIT)

    # When two requests arrive whose callers' node is gone
    address = dead_address(tchu.broker_url)
    with capture_logs() as logs:
        for n in (100, 101):
            send_request(tchu.broker_url, tchu.settings.calls_exchange, "rpc.relay.echo", n, address)
        _wait_for(logs, "reply_undeliverable", 2)
        release.set()
        results = [future.result(timeout=WAIT) for future in live]

    # Then the live calls are answered, every handler ran once, and the worker kept its connection
    assert results == [n * 2 for n in range(6)]
    assert runs == Counter({n: 1 for n in [*range(6), 100, 101]})
    assert worker._loop.generation == generation
    worker_events = [entry["event"] for entry in logs if entry.get("loop") == worker._loop.name]
    assert "connection_lost" not in worker_events
    assert _ready(tchu.broker_url, f"{worker.service}.calls") == 0


@pytest.mark.timeout(90)
@pytest.mark.parametrize("call_concurrency", [1, 8])  # 1: handlers run on the I/O thread (fast path)
def test_relayed_replies_reach_live_callers_across_the_relays_lost_connections(
    tchu: TchuFactory, call_concurrency: int
) -> None:
    # Given a worker that takes every caller for one on another node, so every reply is relayed
    runs: Counter[int] = Counter()
    registry = _counting_registry(runs, threading.Event(), threading.Semaphore(0))
    worker = tchu.worker(registry, call_concurrency=call_concurrency)
    _treat_every_caller_as_elsewhere(worker)
    client = tchu.client()
    address = dead_address(tchu.broker_url)

    # When 200 live calls from 8 threads meet 5 requests of callers whose node is gone
    def call(n: int) -> int:
        if n % 40 == 7:
            send_request(tchu.broker_url, tchu.settings.calls_exchange, "rpc.relay.echo", 1000 + n, address)
        return int(client.call("rpc.relay.echo", n, timeout=WAIT))

    with capture_logs() as logs:
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(call, range(200)))
        _wait_for(logs, "reply_undeliverable", 5)

    # Then each live call got its answer, each request ran once, and the relay lost its connection
    assert results == [n * 2 for n in range(200)]
    assert set(runs.values()) == {1} and len(runs) == 205
    assert any(entry["event"] == "relay_connection_lost" for entry in logs)
    assert _ready(tchu.broker_url, f"{worker.service}.calls") == 0


def _treat_every_caller_as_elsewhere(worker: Worker) -> None:
    done = threading.Event()

    def elsewhere() -> None:
        worker._settler.node = "reply@elsewhere"
        worker._settler._here.clear()
        done.set()

    worker._loop.submit(elsewhere)
    assert done.wait(WAIT)


def _ready(url: str, queue: str) -> int:
    """Return how many messages wait in `queue` (a requeued request would)."""
    with Connection(url, connect_timeout=5) as conn:
        return int(conn.default_channel.queue_declare(queue, passive=True).message_count)
