"""10,000 malformed messages straight into a service's queues: the worker survives, none is lost.

Every message must end in `<service>.dead` or be acked with a trace: a reply (error or not) to the
fuzzer's reply queue, or a log line naming it (`request_expired`, `event_unhandled`,
`handler_failed`, `message_unroutable`). The `compression` header and non-UTF-8 property values are
fuzzed apart, below, with the other single messages that broke the worker.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import amqp
import msgspec
import pytest
from fault_support import get_all, queue_depth, wait_for
from fuzz_messages import CALL_TOPIC, EVENT_TOPIC, ConfirmingPublisher, Fuzzed, Fuzzer
from kombu import Connection

from tchu_rpc import Registry, RpcError, Worker
from tchu_rpc.testing import TchuFactory, capture_logs

COUNT = 10_000
LIMIT = 1024  # max_message_bytes of the fuzzed worker
SEED = int(os.environ.get("TCHU_FUZZ_SEED", "20261128"))
ACKED_WITH_LOG = {"request_expired", "event_unhandled", "handler_failed", "message_unroutable"}


class Payload(msgspec.Struct, frozen=True):
    n: int
    fail: bool = False


def _registry() -> Registry:
    registry = Registry()

    @registry.subscribe(CALL_TOPIC)
    def echo(data: Payload) -> int:
        if data.fail:
            raise RpcError("asked to fail", code="fuzz")
        return data.n

    @registry.subscribe(EVENT_TOPIC)
    def happened(data: Payload) -> None:
        if data.fail:
            raise RpcError("asked to fail", code="fuzz")

    return registry


@pytest.fixture
def fuzz_conn(tchu: TchuFactory) -> Iterator[Connection]:
    with Connection(tchu.broker_url, connect_timeout=5) as conn:
        conn.connect()
        yield conn


def _start_worker(tchu: TchuFactory) -> Worker:
    return tchu.worker(
        _registry(),
        "fuzz",
        max_message_bytes=LIMIT,
        call_concurrency=4,
        event_concurrency=2,
        event_prefetch=32,
    )


def _counts(url: str, service: str, reply_queue: str, logs: list[dict[str, Any]]) -> tuple[int, ...]:
    depths = tuple(queue_depth(url, f"{service}.{s}") for s in ("calls", "events", "dead"))
    return (*depths, queue_depth(url, reply_queue), len(logs))


def _wait_until_quiet(
    url: str, service: str, reply_queue: str, logs: list[dict[str, Any]], within: float
) -> None:
    """Wait until both input queues are empty and nothing has changed for a second.

    Fail at once if the worker drops its connection: a message it cannot get past comes back
    (redelivered) after every reconnection, so it would never get quiet.
    """
    deadline = time.monotonic() + within
    last, quiet_since = None, time.monotonic()
    while True:
        lost = [f"{e.get('error_type')}: {e.get('error')}" for e in logs if e["event"] == "connection_lost"]
        assert not lost, f"the worker dropped its connection {len(lost)} times, first over {lost[0]}"
        counts = _counts(url, service, reply_queue, logs)
        if counts != last:
            last, quiet_since = counts, time.monotonic()
        elif counts[0] == counts[1] == 0 and time.monotonic() - quiet_since >= 1.0:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not quiet after {within} s: calls, events, dead, replies, logs = {counts}")
        time.sleep(0.1)


def _account(
    dead: list[amqp.Message], replies: list[amqp.Message], logs: list[dict[str, Any]]
) -> tuple[Counter[str], set[str]]:
    """Return (dead-lettered ids with their counts, ids acked with a reply or a log line)."""
    dead_ids = Counter(str(m.properties.get("message_id")) for m in dead)
    traced = {str(m.properties.get("correlation_id")) for m in replies}
    traced |= {str(e.get("correlation_id")) for e in logs if e["event"] in ACKED_WITH_LOG}
    return dead_ids, traced - set(dead_ids)


@pytest.mark.timeout(90)
def test_worker_survives_10000_malformed_messages_and_accounts_for_each(
    tchu: TchuFactory, fuzz_conn: Connection, request: pytest.FixtureRequest
) -> None:
    # Given a worker that accepts bodies up to 1 KiB
    worker = _start_worker(tchu)
    service = worker.service
    reply_queue = f"{service}.fuzz-replies"
    channel = fuzz_conn.channel()
    channel.queue_declare(reply_queue, auto_delete=False)
    request.addfinalizer(lambda: _delete_queue(tchu.broker_url, reply_queue))
    exchanges = (tchu.settings.calls_exchange, tchu.settings.events_exchange)
    messages = Fuzzer(SEED, service, *exchanges, reply_to=reply_queue, limit=LIMIT).make(COUNT)
    assert len({m.id for m in messages}) == COUNT

    with capture_logs() as logs:
        # When 10,000 malformed messages are published to its call and event queues, each confirmed
        publisher = ConfirmingPublisher(fuzz_conn)
        for message in messages:
            publisher.publish(message)
        publisher.wait_all(30)
        assert publisher.nacked == 0 and publisher.returned == []
        # And the worker has worked through them
        _wait_until_quiet(tchu.broker_url, service, reply_queue, logs, within=40)

        # Then the worker is alive and answers a normal call
        assert tchu.client().call(CALL_TOPIC, {"n": 7}, timeout=10) == 7
        dead_count = queue_depth(tchu.broker_url, f"{service}.dead")
        dead = get_all(tchu.broker_url, f"{service}.dead")
        replies = get_all(tchu.broker_url, reply_queue)

    # And every message is accounted for, once: dead-lettered, or acked with a reply or a log line
    dead_ids, traced = _account(dead, replies, logs)
    mutation = {m.id: m.mutation for m in messages}
    lost = Counter(mutation[m.id] for m in messages if m.id not in dead_ids and m.id not in traced)
    assert not lost, f"unaccounted messages by mutation: {dict(lost)}"
    twice = [id for id, n in dead_ids.items() if n > 1]
    assert not twice, f"dead-lettered more than once: {twice[:10]}"
    assert set(dead_ids) <= set(mutation), "dead letters the fuzzer never sent"
    assert dead_count + len(traced & set(mutation)) == COUNT, (dead_count, len(traced))
    broken = [e for e in logs if e["event"] in ("message_failed", "lane_job_crashed", "connection_lost")]
    assert not broken, broken[:3]


def _delete_queue(url: str, queue: str) -> None:
    with Connection(url, connect_timeout=5) as conn:
        conn.channel().queue_delete(queue)


# -- single messages that broke the worker, each dead-lettered on its own -------------------
POISON = {
    # py-amqp hands over an empty body as "" (str), which the worker cannot copy to the dead-letter
    # queue (kombu encodes a str body with content_encoding "binary": LookupError).
    "empty_body": ({}, b""),
    # py-amqp decodes the body to str when the message names a content_encoding.
    "msgpack_with_utf8_encoding": (
        {"content_type": "application/msgpack", "content_encoding": "utf-8"},
        b"\x01",  # msgpack 1: valid UTF-8 too, so py-amqp makes it the str "\x01"
    ),
    # kombu's Message decompresses by the `compression` header; an unknown codec or a body that is
    # not compressed raises from the consumer callback, out of drain_events.
    "compression_unknown": ({"application_headers": {"compression": "no-such-codec"}}, b'{"n": 1}'),
    "compression_bad_body": ({"application_headers": {"compression": "application/x-gzip"}}, b'{"n": 1}'),
    # ... with a content_encoding too: the body reaches the worker as a str, which it must copy as
    # the bytes that came (py-amqp encoded a str body itself; tchu_rpc writes its frames).
    "compression_unknown_text_body": (
        {"application_headers": {"compression": "no-such-codec"}, "content_encoding": "utf-8"},
        b'{"n": 1}',
    ),
    # py-amqp decodes short-string properties as UTF-8 while it reads the frame.
    "content_type_not_utf8": ({"content_type": b"application/\xff\xfe"}, b'{"n": 1}'),
    "correlation_id_not_utf8": ({"correlation_id": b"fz\xff\xfe"}, b'{"n": 1}'),
    # spelled \xNN, 200 such bytes would no longer fit a short string in the dead-letter copy
    "correlation_id_long_not_utf8": ({"correlation_id": b"\xff" * 200}, b'{"n": 1}'),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "case",
    sorted(POISON),
)
def test_message_that_broke_decoding_is_dead_lettered_without_wedging_the_worker(
    tchu: TchuFactory, fuzz_conn: Connection, case: str
) -> None:
    properties, body = POISON[case]
    worker = _start_worker(tchu)
    service = worker.service
    client = tchu.client()
    assert client.call(CALL_TOPIC, {"n": 1}, timeout=10) == 1

    with capture_logs() as logs:
        # Given one such message in the call queue and one in the event queue
        publisher = ConfirmingPublisher(fuzz_conn)
        for exchange, key in (
            (tchu.settings.calls_exchange, CALL_TOPIC),
            (tchu.settings.events_exchange, EVENT_TOPIC),
        ):
            props = {
                "message_id": f"poison-{key}",
                "correlation_id": f"poison-{key}",
                "content_type": "application/json",
                "reply_to": "nowhere",
            }
            props.update(properties)
            publisher.publish(Fuzzed(props["message_id"], case, exchange, key, body, props))
        publisher.wait_all(10)

        # Then both messages leave the input queues, dead-lettered, without the worker reconnecting
        def settled() -> bool:
            lost = any(e["event"] == "connection_lost" for e in logs)
            return lost or queue_depth(tchu.broker_url, f"{service}.dead") == 2

        wait_for(settled, 10, "both messages dead-lettered (or the worker's connection lost)", poll=0.05)
        lost = [(e.get("error_type"), e.get("error")) for e in logs if e["event"] == "connection_lost"]
        assert not lost, f"the worker dropped its connection over the message: {lost[:1]}"
        failed = [e.get("error") for e in logs if e["event"] == "message_failed"]
        assert not failed, f"the worker failed on its own: {failed}"
        # And it keeps serving calls
        assert [client.call(CALL_TOPIC, {"n": n}, timeout=5) for n in range(3)] == [0, 1, 2]
    assert queue_depth(tchu.broker_url, f"{service}.calls") == 0
    assert queue_depth(tchu.broker_url, f"{service}.events") == 0
