"""Losing the node that leads a service's quorum queue loses no confirmed event and no call."""

from __future__ import annotations

import collections
import json
import threading
import time
from collections.abc import Callable, Iterable

import pytest
from kombu import Connection
from nodes import Cluster, RabbitNode

from tchu_rpc import (
    ConnectionLost,
    PublishFailed,
    Registry,
    TchuError,
    current_delivery,
)
from tchu_rpc.testing import TchuFactory, capture_logs

EVENTS = 5_000
PUBLISHERS = 4


def _urls_from(first: RabbitNode, cluster: Cluster) -> str:
    """Return the failover list that tries `first` before the other nodes."""
    return ";".join(n.url for n in [first, *(n for n in cluster.nodes if n is not first)])


class _Progress:
    """Count finished operations; let the test wait, bounded, until a count is reached."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.done = 0

    def add(self) -> None:
        with self.cond:
            self.done += 1
            self.cond.notify_all()

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        with self.cond:
            assert self.cond.wait_for(predicate, timeout), f"{what} not within {timeout} s (done {self.done})"


def _run_threads(count: int, target: Callable[[int], None]) -> list[threading.Thread]:
    threads = [threading.Thread(target=target, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    return threads


def _join(threads: Iterable[threading.Thread], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    alive = [t.name for t in threads if t.is_alive()]
    assert not alive, f"threads still running after {timeout} s: {alive}"


@pytest.mark.slow
@pytest.mark.timeout(300)  # the first test of the session also starts the cluster
def test_events_confirmed_across_the_loss_of_their_queues_leader_are_all_handled(
    cluster_tchu: TchuFactory, rabbit_cluster: Cluster
) -> None:
    handled: list[int] = []
    handled_cond = threading.Condition()
    registry = Registry()

    @registry.subscribe("cluster.loss.happened")
    def happened(n: int) -> None:
        with handled_cond:
            handled.append(n)
            handled_cond.notify_all()

    # Given a quorum events queue, declared through node 1 so that node 1 leads it
    declarer = cluster_tchu.worker(registry, "loss", queue_type="quorum")
    declarer.stop(timeout=5)
    queue = f"{cluster_tchu.prefix}.loss.events"
    leader = rabbit_cluster.leader_of(queue)
    other = next(n for n in rabbit_cluster.nodes if n is not leader)
    # And a worker on another node, and a client on the leader, each given the three URLs
    worker = cluster_tchu.worker(
        registry, "loss", queue_type="quorum", broker_url=_urls_from(other, rabbit_cluster)
    )
    client = cluster_tchu.client(broker_url=_urls_from(leader, rabbit_cluster))
    client.publish("cluster.loss.happened", -1, timeout=10)
    with handled_cond:
        assert handled_cond.wait_for(lambda: -1 in handled, 10)
    assert rabbit_cluster.node_of(worker) is other
    assert rabbit_cluster.node_of(client) is leader

    confirmed: set[int] = set()
    failed: dict[int, BaseException] = {}
    lock = threading.Lock()
    progress = _Progress()

    def publish(index: int) -> None:
        for n in range(index, EVENTS, PUBLISHERS):
            try:
                client.publish("cluster.loss.happened", n, timeout=10)
            except Exception as exc:
                with lock:
                    failed[n] = exc
            else:
                with lock:
                    confirmed.add(n)
            progress.add()

    # When 4 threads publish 5,000 events with confirms
    began = time.monotonic()
    publishers = _run_threads(PUBLISHERS, publish)
    # And the node leading the events queue stops once 1,000 are confirmed
    progress.wait_for(lambda: len(confirmed) >= 1_000, 60, "1,000 confirms")
    rabbit_cluster.stop_app(leader)
    stopped_at = progress.done
    # And starts again once 2,000 more publishes have finished (or all of them)
    progress.wait_for(lambda: progress.done >= min(EVENTS, stopped_at + 2_000), 60, "2,000 more publishes")
    rabbit_cluster.start_app(leader)
    _join(publishers, 120)
    published_in = time.monotonic() - began

    # Then every confirmed event is handled, at least once
    with handled_cond:
        if not handled_cond.wait_for(lambda: confirmed <= set(handled), 60):
            lost = sorted(confirmed - set(handled))
            pytest.fail(f"{len(lost)} confirmed events never handled, e.g. {lost[:20]}")
        counts = collections.Counter(n for n in handled if n >= 0)
    duplicates = sum(c - 1 for c in counts.values() if c > 1)
    # And a publish that was not confirmed failed with the library's own error
    wrong = {n: exc for n, exc in failed.items() if not isinstance(exc, (ConnectionLost, PublishFailed))}
    assert not wrong, f"publishes failed with other errors: {list(wrong.items())[:5]}"
    assert all(isinstance(exc, TchuError) for exc in failed.values())
    assert len(confirmed) + len(failed) == EVENTS
    unconfirmed_delivered = sum(1 for n in failed if n in counts)
    print(
        f"\nleader {leader.nodename} stopped after {stopped_at} publishes; {len(confirmed)} confirmed, "
        f"{len(failed)} failed ({collections.Counter(type(e).__name__ for e in failed.values())}), "
        f"{unconfirmed_delivered} of the failed delivered anyway; {duplicates} duplicate handlings "
        f"({sum(1 for c in counts.values() if c > 1)} events); published in {published_in:.1f} s; "
        f"leader after: {rabbit_cluster.leader_of(queue).nodename}"
    )


CALLS = 3_000
CALLERS = 8
CALL_TIMEOUT = 10.0
RETRIES = 5


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_calls_across_the_loss_of_their_queues_leader_are_answered_and_run_at_most_twice(
    cluster_tchu: TchuFactory, rabbit_cluster: Cluster
) -> None:
    runs: collections.Counter[str] = collections.Counter()
    runs_lock = threading.Lock()
    registry = Registry()

    @registry.subscribe("rpc.cluster.loss.square")
    def square(n: int) -> int:
        delivery = current_delivery()
        assert delivery is not None and delivery.message_id
        with runs_lock:
            runs[delivery.message_id] += 1
        return n * n

    # Given a quorum call queue, declared through node 1 so that node 1 leads it
    cluster_tchu.worker(registry, "callloss", queue_type="quorum").stop(timeout=5)
    leader = rabbit_cluster.leader_of(f"{cluster_tchu.prefix}.callloss.calls")
    other = next(n for n in rabbit_cluster.nodes if n is not leader)
    # And a worker on each node, and a client on the leader and one on another node
    for node in rabbit_cluster.nodes:
        worker = cluster_tchu.worker(
            registry,
            "callloss",
            queue_type="quorum",
            call_concurrency=8,
            broker_url=_urls_from(node, rabbit_cluster),
        )
        assert rabbit_cluster.node_of(worker) is node
    clients = [cluster_tchu.client(broker_url=_urls_from(node, rabbit_cluster)) for node in (leader, other)]
    for client in clients:
        assert client.call("rpc.cluster.loss.square", -1, timeout=CALL_TIMEOUT) == 1

    results: dict[int, int] = {}
    errors: dict[int, BaseException] = {}
    lost: collections.Counter[int] = collections.Counter()
    lost_by_client = [0, 0]  # the leader's client, the other's
    slowest = [0.0]
    lock = threading.Lock()
    progress = _Progress()

    def call(index: int) -> None:
        client = clients[index % 2]
        for n in range(index, CALLS, CALLERS):
            for _ in range(1 + RETRIES):
                started = time.monotonic()
                try:
                    result = client.call("rpc.cluster.loss.square", n, timeout=CALL_TIMEOUT)
                except ConnectionLost:
                    with lock:
                        lost[n] += 1
                        lost_by_client[index % 2] += 1
                        slowest[0] = max(slowest[0], time.monotonic() - started)
                    continue
                except Exception as exc:
                    with lock:
                        errors[n] = exc
                    break
                with lock:
                    results[n] = result
                    slowest[0] = max(slowest[0], time.monotonic() - started)
                break
            progress.add()

    # When 8 threads make 3,000 calls
    began = time.monotonic()
    with capture_logs() as logs:
        callers = _run_threads(CALLERS, call)
        # And the node leading the call queue stops once 500 are done
        progress.wait_for(lambda: progress.done >= 500, 60, "500 calls")
        rabbit_cluster.stop_app(leader)
        stopped_at = progress.done
        # And starts again once 1,000 more are done (or all of them)
        progress.wait_for(lambda: progress.done >= min(CALLS, stopped_at + 1_000), 120, "1,000 more calls")
        rabbit_cluster.start_app(leader)
        _join(callers, 180)
    took = time.monotonic() - began
    events = collections.Counter(entry["event"] for entry in logs)

    # Then every call returned its result, possibly after ConnectionLost and a retry
    assert not errors, f"{len(errors)} calls failed, e.g. {list(errors.items())[:5]}"
    assert results == {n: n * n for n in range(CALLS)}
    # And none waited past its timeout
    assert slowest[0] <= CALL_TIMEOUT + 1.0
    # And no request's handler ran more than twice
    twice = sum(1 for count in runs.values() if count == 2)
    assert max(runs.values()) <= 2, f"runs per request: {collections.Counter(runs.values())}"
    print(
        f"\nleader {leader.nodename} stopped after {stopped_at} calls; ConnectionLost: {lost_by_client[0]} "
        f"on the leader's client, {lost_by_client[1]} on the other ({len(lost)} calls retried); {twice} "
        f"requests ran twice; slowest call {slowest[0]:.2f} s; all in {took:.1f} s; replies relayed "
        f"then dropped (caller gone): {events['reply_undeliverable']}, relay connections lost: "
        f"{events['relay_connection_lost']}"
    )


DEAD_EVENTS = 2_000


def _dead_letters(url: str, queue: str) -> list[int]:
    """Take every message out of the dead-letter queue `queue`; return their bodies (event data)."""
    bodies: list[int] = []
    with Connection(url, connect_timeout=10) as conn:
        channel = conn.channel()
        while (message := channel.basic_get(queue, no_ack=True)) is not None:
            bodies.append(json.loads(message.body))
    return bodies


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_events_dead_lettered_across_the_loss_of_the_dead_queues_leader_are_all_kept(
    cluster_tchu: TchuFactory, rabbit_cluster: Cluster
) -> None:
    handled = _Progress()
    registry = Registry()

    @registry.subscribe("cluster.dead.failed")
    def failed(n: int) -> None:
        handled.add()
        raise ValueError(f"event {n} cannot be handled")

    # Given quorum queues declared through node 1, so that node 1 leads the dead-letter queue
    cluster_tchu.worker(registry, "deadloss", queue_type="quorum").stop(timeout=5)
    dead = f"{cluster_tchu.prefix}.deadloss.dead"
    leader = rabbit_cluster.leader_of(dead)
    others = [n for n in rabbit_cluster.nodes if n is not leader]
    # And a worker on another node, whose handler fails every event, and a client on the third
    cluster_tchu.worker(
        registry, "deadloss", queue_type="quorum", broker_url=_urls_from(others[0], rabbit_cluster)
    )
    client = cluster_tchu.client(broker_url=_urls_from(others[1], rabbit_cluster))

    confirmed: set[int] = set()
    failed_publishes: dict[int, BaseException] = {}

    def publish(index: int) -> None:
        for n in range(index, DEAD_EVENTS, PUBLISHERS):
            try:
                client.publish("cluster.dead.failed", n, timeout=10)
            except TchuError as exc:
                failed_publishes[n] = exc
            else:
                confirmed.add(n)

    # When 2,000 events are published with confirms, and each is dead-lettered by the worker
    with capture_logs():  # 2,000 message_dead_lettered warnings
        publishers = _run_threads(PUBLISHERS, publish)
        # And the dead-letter queue's leader stops once 300 events have been handled
        handled.wait_for(lambda: handled.done >= 300, 60, "300 events handled")
        rabbit_cluster.stop_app(leader)
        stopped_at = handled.done
        _join(publishers, 120)
        # And every confirmed event has reached its handler (and so the dead-letter step)
        handled.wait_for(lambda: handled.done >= len(confirmed), 60, "every confirmed event handled")
        rabbit_cluster.start_app(leader)

    # Then every confirmed event is in the dead-letter queue, at least once
    url = _urls_from(others[0], rabbit_cluster)
    letters: list[int] = []
    deadline = time.monotonic() + 60
    while not confirmed <= set(letters):
        assert time.monotonic() < deadline, (
            f"{len(confirmed - set(letters))} confirmed events never dead-lettered"
        )
        letters += _dead_letters(url.split(";")[0], dead)
        time.sleep(0.2)  # the worker's confirms and acks are on its own thread: nothing signals here
    counts = collections.Counter(letters)
    print(
        f"\ndead queue leader {leader.nodename} stopped after {stopped_at} events handled; "
        f"{len(confirmed)} confirmed, {len(failed_publishes)} publishes failed; {len(counts)} dead letters, "
        f"{sum(c - 1 for c in counts.values())} duplicates; {handled.done} handler runs"
    )
