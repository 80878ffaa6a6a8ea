"""Event handler retries against the real broker: delays in delay queues, only the failed handler again."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from itertools import pairwise
from typing import Any

import pytest
from kombu import Connection

from tchu_rpc import Registry, Worker, current_delivery, topology, wire
from tchu_rpc._worker import retries
from tchu_rpc.retry import Retry
from tchu_rpc.testing import TchuFactory

#: How much later than its longest delay a retry may run on a busy machine.
SLACK = 0.5
#: RabbitMQ counts TTLs in whole milliseconds.
TTL_ROUNDING = 0.002


class Flaky:
    """An event handler failing its first `failures` runs; records when each run began and which it was."""

    def __init__(self, failures: int, error: type[Exception] = ConnectionError) -> None:
        self.failures = failures
        self.error = error
        self.runs: list[tuple[float, int]] = []  # (monotonic start, attempt header)
        self.changed = threading.Condition()

    def __call__(self, data: Any) -> None:
        delivery = current_delivery()
        attempt = delivery.headers.get(wire.HEADER_ATTEMPT, 1) if delivery else 1
        with self.changed:
            self.runs.append((time.monotonic(), attempt))
            run = len(self.runs)
            self.changed.notify_all()
        if run <= self.failures:
            raise self.error(f"down {run}")

    def wait_runs(self, count: int, timeout: float = 10) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: len(self.runs) >= count, timeout)

    @property
    def attempts(self) -> list[int]:
        return [attempt for _, attempt in self.runs]

    @property
    def gaps(self) -> list[float]:
        starts = [start for start, _ in self.runs]
        return [later - earlier for earlier, later in pairwise(starts)]


@pytest.fixture
def start(tchu: TchuFactory) -> Iterator[Callable[..., Worker]]:
    """Start workers as `tchu.worker` does, and delete their services' delay queues afterwards."""
    declared: set[str] = set()

    def start_worker(registry: Registry, name: str = "svc", **settings: Any) -> Worker:
        worker = tchu.worker(registry, name, **settings)
        for delay_ms in retries.delays(registry.handlers):
            declared.add(topology.retry_queue_name(worker.service, delay_ms))
        return worker

    yield start_worker
    with Connection(tchu.broker_url, connect_timeout=5) as conn:
        channel = conn.channel()
        for queue in declared:
            channel.queue_delete(queue)


def count(conn: Connection, queue: str) -> int:
    return int(conn.default_channel.queue_declare(queue, passive=True).message_count)


def wait_count(conn: Connection, queue: str, expected: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if count(conn, queue) == expected:
            return True
        time.sleep(0.05)  # polling a queue's depth; there is no event to await
    return False


def get_one(conn: Connection, queue: str, timeout: float = 10) -> Any:
    assert wait_count(conn, queue, 1, timeout), f"nothing arrived in {queue}"
    message = conn.default_channel.basic_get(queue, no_ack=True)
    assert message is not None
    return message


def waiting_retries(conn: Connection, worker: Worker) -> int:
    delays = retries.delays(worker.registry.handlers)
    return sum(count(conn, topology.retry_queue_name(worker.service, ms)) for ms in delays)


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_handler_failing_twice_then_succeeding_runs_three_times_after_its_backoff(
    tchu: TchuFactory, start: Callable[..., Worker], queue_type: str
) -> None:
    # Given a handler that fails twice with a retry policy, and a sibling on the same event
    flaky, sibling = Flaky(failures=2), Flaky(failures=0)
    registry = Registry()
    registry.add("order.created", flaky, retry=Retry(attempts=5, first_delay=0.2, backoff=2.0, max_delay=5))
    registry.add("order.*", sibling)
    worker = start(registry, queue_type=queue_type)
    # When an event reaches them
    tchu.client().publish("order.created", {"id": 1})
    # Then the handler runs three times, each retry after its (jittered) backoff: [delay / 2, delay]
    assert flaky.wait_runs(3)
    assert flaky.attempts == [1, 2, 3]
    first, second = flaky.gaps
    assert 0.1 - TTL_ROUNDING <= first <= 0.2 + SLACK
    assert 0.2 - TTL_ROUNDING <= second <= 0.4 + SLACK
    # And the sibling ran once; nothing was dead-lettered and no retry is left waiting
    assert sibling.attempts == [1]
    with Connection(tchu.broker_url) as conn:
        assert count(conn, f"{worker.service}.dead") == 0
        assert waiting_retries(conn, worker) == 0
    assert not flaky.wait_runs(4, timeout=0.5)
    assert sibling.attempts == [1]


def test_handler_that_always_fails_is_dead_lettered_after_its_attempts_with_every_error(
    tchu: TchuFactory, start: Callable[..., Worker]
) -> None:
    broken = Flaky(failures=99)
    registry = Registry()
    registry.add("order.created", broken, retry=Retry(attempts=3, first_delay=0.1, max_delay=0.2))
    worker = start(registry)
    tchu.client().publish("order.created", {"id": 2})
    with Connection(tchu.broker_url) as conn:
        dead = get_one(conn, f"{worker.service}.dead")
        assert count(conn, f"{worker.service}.dead") == 0  # one dead copy, not one per run
    assert broken.attempts == [1, 2, 3]
    errors = ["ConnectionError: down 1", "ConnectionError: down 2", "ConnectionError: down 3"]
    assert dead.headers[wire.HEADER_ATTEMPT_ERRORS] == errors
    reason = dead.headers[wire.HEADER_ERROR]
    assert "after 3 attempts" in reason and "Flaky@order.created" in reason
    assert all(error in reason for error in errors)
    assert dead.headers[wire.HEADER_TOPIC] == "order.created"
    assert json.loads(dead.body) == {"id": 2}


def test_worker_restarted_while_a_retry_waits_still_runs_it(
    tchu: TchuFactory, start: Callable[..., Worker]
) -> None:
    flaky, sibling = Flaky(failures=1), Flaky(failures=0)
    policy = Retry(attempts=3, first_delay=1.5, jitter=False)

    def registry() -> Registry:
        handlers = Registry()
        handlers.add("order.created", flaky, retry=policy)
        handlers.add("order.created", sibling)
        return handlers

    # Given a retry waiting on the broker, and its worker stopped
    first = start(registry())
    tchu.client().publish("order.created", {"id": 3})
    assert flaky.wait_runs(1)
    first.stop()
    with Connection(tchu.broker_url) as conn:
        assert count(conn, topology.retry_queue_name(first.service, 1500)) == 1
        # When its delay passes with no worker running, it waits in the event queue
        assert wait_count(conn, f"{first.service}.events", 1)
    # Then a new worker of the service runs the failed handler again, and only it
    start(registry())
    assert flaky.wait_runs(2)
    assert flaky.attempts == [1, 2]
    assert flaky.gaps[0] >= 1.5 - TTL_ROUNDING
    assert not sibling.wait_runs(2, timeout=0.5)


def test_exception_not_in_on_is_dead_lettered_at_once(
    tchu: TchuFactory, start: Callable[..., Worker]
) -> None:
    picky = Flaky(failures=1, error=ValueError)
    registry = Registry()
    registry.add("order.created", picky, retry=Retry(first_delay=2.0, on=(ConnectionError,)))
    worker = start(registry)
    tchu.client().publish("order.created", {"id": 4})
    with Connection(tchu.broker_url) as conn:
        dead = get_one(conn, f"{worker.service}.dead")
        assert waiting_retries(conn, worker) == 0
    assert "ValueError: down 1" in dead.headers[wire.HEADER_ERROR]
    assert wire.HEADER_RETRY_HANDLER not in dead.headers
    assert picky.attempts == [1]


def test_several_failed_handlers_of_one_event_are_each_retried_alone(
    tchu: TchuFactory, start: Callable[..., Worker]
) -> None:
    # Two handlers of one name and pattern (two instances) fail once each; a third never fails
    once, twice, steady = Flaky(failures=1), Flaky(failures=2), Flaky(failures=0)
    policy = Retry(attempts=4, first_delay=0.1, max_delay=0.2)
    registry = Registry()
    registry.add("order.created", once, retry=policy)
    registry.add("order.created", twice, retry=policy)
    registry.add("order.#", steady, retry=policy)
    worker = start(registry)
    tchu.client().publish("order.created", {"id": 5})
    assert once.wait_runs(2) and twice.wait_runs(3)
    assert once.attempts == [1, 2]
    assert twice.attempts == [1, 2, 3]
    assert not once.wait_runs(3, timeout=0.5)
    assert steady.attempts == [1]
    with Connection(tchu.broker_url) as conn:
        assert count(conn, f"{worker.service}.dead") == 0


def test_retry_headers_from_a_publisher_are_not_trusted(
    tchu: TchuFactory, start: Callable[..., Worker]
) -> None:
    # Only the broker's dead-lettering (or the worker) reaches the event queue by the default exchange
    first, second = Flaky(failures=0), Flaky(failures=0)
    registry = Registry()
    registry.add("order.created", first, retry=Retry())
    registry.add("order.created", second, retry=Retry())
    start(registry)
    named = retries.key_of(registry.handlers[1], registry.handlers)
    with Connection(tchu.broker_url) as conn:
        conn.Producer().publish(
            b'{"id":6}',
            exchange=tchu.settings.events_exchange,
            routing_key="order.created",
            content_type="application/json",
            content_encoding="utf-8",
            headers={wire.HEADER_RETRY_HANDLER: named, wire.HEADER_ATTEMPT: 3},
        )
    assert first.wait_runs(1) and second.wait_runs(1)
    assert first.attempts == [3] and second.attempts == [3]  # the handlers see the headers, nothing more
    assert not first.wait_runs(2, timeout=0.3)


def test_a_retried_handler_sees_the_identity_the_broker_checked_on_the_first_publish(
    tchu: TchuFactory, start: Callable[..., Worker]
) -> None:
    # Given a handler that fails once and records who published what it runs
    users: list[str | None] = []
    done = threading.Event()

    def handler(data: Any) -> None:
        delivery = current_delivery()
        users.append(delivery.user_id if delivery else "?")
        if len(users) == 1:
            raise ConnectionError("down")
        done.set()

    registry = Registry()
    registry.add("order.created", handler, retry=Retry(attempts=2, first_delay=0.05))
    start(registry)
    # When a client logged in as the broker's user publishes an event
    client = tchu.client()
    client.publish("order.created", {"id": 1})
    # Then its retry (a copy the worker published with its own login) still says who sent it
    assert done.wait(10)
    login = Connection(tchu.broker_url).userid
    assert users == [login, login]
