"""Clients and workers given every node of a cluster move to a live node when theirs dies."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from typing import Any

import pytest
from nodes import Cluster

from tchu_rpc import CallTimeout, Client, ConnectionLost, Registry, current_delivery
from tchu_rpc.testing import TchuFactory

RECOVER_WITHIN = 10.0
IDEMPOTENT_CALLS = 3


def _registry(entered: threading.Event, release: threading.Event) -> Registry:
    registry = Registry()

    @registry.subscribe("rpc.cluster.ping")
    def ping(n: int) -> int:
        return n + 1

    @registry.subscribe("rpc.cluster.slow")
    def slow(n: int) -> int:
        entered.set()
        release.wait(10)
        return n

    return registry


class _Runs:
    """Count a handler's runs by message id; let the test wait, bounded, until a count is reached."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.by_id: collections.Counter[str] = collections.Counter()

    def add(self, message_id: str) -> None:
        with self.cond:
            self.by_id[message_id] += 1
            self.cond.notify_all()

    def wait_for(
        self, predicate: Callable[[collections.Counter[str]], bool], timeout: float, what: str
    ) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: predicate(self.by_id), timeout), f"{what}: {self.by_id}"


def _square_registry(runs: _Runs, release: threading.Event) -> Registry:
    registry = Registry()

    @registry.subscribe("rpc.cluster.ping")
    def ping(n: int) -> int:
        return n + 1

    @registry.subscribe("rpc.cluster.square")
    def square(n: int) -> int:
        delivery = current_delivery()
        assert delivery is not None and delivery.message_id
        runs.add(delivery.message_id)
        release.wait(20)
        return n * n

    return registry


@contextmanager
def _released(release: threading.Event) -> Iterator[threading.Event]:
    """Yield `release`; set it at the end, so that a failed test leaves no handler blocked."""
    try:
        yield release
    finally:
        release.set()


def _recovered(client: Client, since: float) -> float:
    """Call ping until a call succeeds; return when it did, seconds after `since`."""
    failures: list[str] = []
    while True:
        try:
            assert client.call("rpc.cluster.ping", 41, timeout=1.0) == 42
            return time.monotonic() - since
        except (ConnectionLost, CallTimeout) as exc:
            failures.append(type(exc).__name__)
        assert time.monotonic() - since < RECOVER_WITHIN, f"no call succeeded; failures: {failures}"


def _call_in_background(client: Client, outcome: list[Any]) -> threading.Thread:
    def call_slow() -> None:
        started = time.monotonic()
        try:
            outcome.append(client.call("rpc.cluster.slow", 7, timeout=30))
        except Exception as exc:
            outcome.append(exc)
        outcome.append(time.monotonic() - started)

    caller = threading.Thread(target=call_slow)
    caller.start()
    return caller


@pytest.mark.slow
@pytest.mark.timeout(240)  # the first test of the session also starts the cluster
def test_a_worker_whose_node_dies_reconnects_to_another_node_and_consumes_again_within_10_s(
    cluster_tchu: TchuFactory, rabbit_cluster: Cluster
) -> None:
    entered, release = threading.Event(), threading.Event()
    first, second, third = rabbit_cluster.nodes
    # Given a worker on quorum queues on node 1 and a client on node 2, each given the three URLs
    worker = cluster_tchu.worker(
        _registry(entered, release), "failover", queue_type="quorum", call_concurrency=2
    )
    client = cluster_tchu.client(broker_url=";".join(n.url for n in (second, third, first)))
    assert client.call("rpc.cluster.ping", 1, timeout=10) == 2
    assert rabbit_cluster.node_of(worker) is first
    assert rabbit_cluster.node_of(client) is second
    # And a call in flight on the worker's connection
    outcome: list[Any] = []
    caller = _call_in_background(client, outcome)
    assert entered.wait(10)

    # When node 1 stops
    rabbit_cluster.stop_app(first)
    stopped = time.monotonic()
    release.set()

    # Then within 10 s a call goes through a live node, served by the same worker
    took = _recovered(client, stopped)
    assert took < RECOVER_WITHIN
    assert rabbit_cluster.node_of(worker) is not first
    assert [client.call("rpc.cluster.ping", n, timeout=5) for n in range(10)] == list(range(1, 11))
    # And the call in flight was redelivered (quorum queue) and answered, within its timeout
    caller.join(30)
    assert outcome[0] == 7, outcome
    print(f"recovered in {took:.2f} s; cluster {rabbit_cluster.timings}")


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_call_in_flight_when_the_clients_node_dies_fails_with_connection_lost(
    cluster_tchu: TchuFactory, rabbit_cluster: Cluster
) -> None:
    entered, release = threading.Event(), threading.Event()
    first, second, third = rabbit_cluster.nodes
    # Given a client on node 1 and a worker on node 2, each given the three URLs
    worker = cluster_tchu.worker(
        _registry(entered, release),
        "inflight",
        queue_type="quorum",
        call_concurrency=2,
        broker_url=";".join(n.url for n in (second, third, first)),
    )
    client = cluster_tchu.client()
    assert client.call("rpc.cluster.ping", 1, timeout=10) == 2
    assert rabbit_cluster.node_of(client) is first
    assert rabbit_cluster.node_of(worker) is second
    # And a call in flight on the client's connection
    outcome: list[Any] = []
    caller = _call_in_background(client, outcome)
    assert entered.wait(10)

    # When node 1 stops
    rabbit_cluster.stop_app(first)
    stopped = time.monotonic()

    # Then the call in flight fails with ConnectionLost at once, not at its timeout
    caller.join(10)
    assert not caller.is_alive(), "the call in flight still waits"
    assert isinstance(outcome[0], ConnectionLost), outcome
    assert outcome[1] < 15
    # And the next call goes through a live node
    # (RabbitMQ 3.10 closes the worker's channel over its reply to the dead node's direct reply-to
    # address, 541; the request comes back redelivered, and then the worker acks it before replying)
    release.set()
    took = _recovered(client, stopped)
    assert rabbit_cluster.node_of(client) is not first
    print(f"recovered in {took:.2f} s")


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_idempotent_calls_in_flight_when_the_clients_node_dies_are_sent_again_and_answered(
    cluster_tchu: TchuFactory, rabbit_cluster: Cluster
) -> None:
    runs = _Runs()
    first, second, third = rabbit_cluster.nodes
    with _released(threading.Event()) as release:
        # Given a client on node 1 and a worker on node 2 with a thread for each call and its copy
        worker = cluster_tchu.worker(
            _square_registry(runs, release),
            "idempotent",
            queue_type="quorum",
            call_concurrency=2 * IDEMPOTENT_CALLS,
            broker_url=";".join(n.url for n in (second, third, first)),
        )
        client = cluster_tchu.client()
        assert client.call("rpc.cluster.ping", 1, timeout=10) == 2
        assert rabbit_cluster.node_of(client) is first
        assert rabbit_cluster.node_of(worker) is second
        # And three idempotent calls in flight, each handler running
        calls = [
            client.call_async("rpc.cluster.square", n, timeout=30, idempotent=True)
            for n in range(2, 2 + IDEMPOTENT_CALLS)
        ]
        runs.wait_for(lambda by_id: len(by_id) == IDEMPOTENT_CALLS, 10, "the calls did not all start")
        began = time.monotonic()

        # When node 1 stops
        rabbit_cluster.stop_app(first)

        # Then each call is sent again, with the same message id, through a live node
        runs.wait_for(
            lambda by_id: len(by_id) == IDEMPOTENT_CALLS and all(c == 2 for c in by_id.values()),
            RECOVER_WITHIN,
            "the calls were not each sent again",
        )
        assert rabbit_cluster.node_of(client) is not first
        # And once the handlers return, each call returns its own result within its timeout
        release.set()
        _, waiting = futures.wait(calls, timeout=30)
        assert not waiting, f"{len(waiting)} calls still wait"
        assert [call.result() for call in calls] == [n * n for n in range(2, 2 + IDEMPOTENT_CALLS)]
        # And each request ran twice, no more: its first run's reply to the dead node cost the
        # worker no other request (it went through the relay)
        assert dict(runs.by_id) == {message_id: 2 for message_id in runs.by_id}
        took = time.monotonic() - began
        assert took < 30
        assert client.call("rpc.cluster.ping", 41, timeout=5) == 42
    print(f"answered {took:.2f} s after the stop; handler runs by message id {dict(runs.by_id)}")
