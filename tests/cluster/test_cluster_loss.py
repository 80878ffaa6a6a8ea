"""Losing the node that leads a service's quorum event queue loses no confirmed event."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterable

import pytest
from nodes import Cluster, RabbitNode

from tchu_rpc import (
    ConnectionLost,
    PublishFailed,
    Registry,
    TchuError,
)
from tchu_rpc.testing import TchuFactory

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
