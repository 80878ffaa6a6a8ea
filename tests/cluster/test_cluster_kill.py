"""A quorum queue's leader node killed hard (SIGKILL, as a machine loss) under mixed load.

While the surviving nodes elect new leaders (about 1.5 s here) the broker refuses (nacks) every
publish to the queues. A client publishes refused messages again until their time is up: no caller
sees a refusal while its deadline has time left, every call is answered (after one `ConnectionLost`
at most for a caller whose own connection was on the dead node), and nothing confirmed is lost.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field

import pytest
from nodes import Cluster, RabbitNode
from test_cluster_loss import _join, _Progress, _run_threads, _urls_from

from tchu_rpc import Client, ConnectionLost, Registry, TchuError
from tchu_rpc.testing import TchuFactory

OPERATIONS = 3_000
PUBLISHERS = 4
CALLERS = 4
CALL_TIMEOUT = 5.0
RETRIES = 3  # a call that met ConnectionLost is made again, this often at most
KILL_AFTER = 500  # operations done before the leader is killed
#: How early an error may come before its deadline (the client's clock ticks, the test's own).
EARLY = 0.05


@dataclass
class _Outcomes:
    """What each operation came to, as its caller saw it."""

    results: dict[int, int] = field(default_factory=dict)
    confirmed: set[int] = field(default_factory=set)
    failed: dict[int, tuple[BaseException, float]] = field(default_factory=dict)  # error, seconds taken
    early: list[tuple[str, int, BaseException, float]] = field(default_factory=list)
    lost: collections.Counter[int] = field(default_factory=collections.Counter)
    slowest: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def summary(self) -> str:
        kinds = collections.Counter(type(exc).__name__ for exc, _ in self.failed.values())
        early = collections.Counter(f"{kind} {type(exc).__name__}" for kind, _, exc, _ in self.early)
        return (
            f"{len(self.results)} calls answered, {len(self.confirmed)} events confirmed, "
            f"{len(self.failed)} failed ({dict(kinds)}), {len(self.early)} errors with time left "
            f"({dict(early)}), {sum(self.lost.values())} ConnectionLost retried, slowest {self.slowest:.2f} s"
        )


def _service(handled: collections.Counter[int], handled_cond: threading.Condition) -> Registry:
    registry = Registry()

    @registry.subscribe("cluster.kill.happened")
    def happened(n: int) -> None:
        with handled_cond:
            handled[n] += 1
            handled_cond.notify_all()

    @registry.subscribe("rpc.cluster.kill.square")
    def square(n: int) -> int:
        return n * n

    return registry


def _call(client: Client, n: int, own_node_died: bool, out: _Outcomes) -> None:
    for attempt in range(1 + RETRIES):
        started = time.monotonic()
        try:
            result = client.call("rpc.cluster.kill.square", n, timeout=CALL_TIMEOUT)
        except ConnectionLost as exc:
            took = time.monotonic() - started
            with out.lock:
                out.slowest = max(out.slowest, took)
                out.lost[n] += 1
                if not own_node_died or attempt == RETRIES:
                    out.failed[n] = (exc, took)
            if own_node_died:
                continue
            return
        except TchuError as exc:
            took = time.monotonic() - started
            with out.lock:
                out.failed[n] = (exc, took)
                if took < CALL_TIMEOUT - EARLY:
                    out.early.append(("call", n, exc, took))
            return
        with out.lock:
            out.results[n] = result
            out.slowest = max(out.slowest, time.monotonic() - started)
        return


def _publish(client: Client, n: int, out: _Outcomes) -> None:
    started = time.monotonic()
    try:
        client.publish("cluster.kill.happened", n)  # within the client's publish_timeout
    except TchuError as exc:
        took = time.monotonic() - started
        with out.lock:
            out.failed[n] = (exc, took)
            if took < client.settings.publish_timeout - EARLY:
                out.early.append(("event", n, exc, took))
    else:
        with out.lock:
            out.confirmed.add(n)


def _leader_of_service(cluster: Cluster, factory: TchuFactory, registry: Registry) -> RabbitNode:
    # Declared through node 1 (the first URL), so that node 1 leads both of the service's queues.
    factory.worker(registry, "kill", queue_type="quorum").stop(timeout=5)
    leader = cluster.leader_of(f"{factory.prefix}.kill.calls")
    assert cluster.leader_of(f"{factory.prefix}.kill.events") is leader
    return leader


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_no_refusal_reaches_a_caller_with_time_left_when_the_queues_leader_is_killed(
    cluster_tchu: TchuFactory, rabbit_cluster: Cluster
) -> None:
    handled: collections.Counter[int] = collections.Counter()
    handled_cond = threading.Condition()
    registry = _service(handled, handled_cond)
    # Given a service whose quorum queues node 1 leads, and a worker on each other node
    leader = _leader_of_service(rabbit_cluster, cluster_tchu, registry)
    others = [node for node in rabbit_cluster.nodes if node is not leader]
    for node in others:
        url = _urls_from(node, rabbit_cluster)
        worker = cluster_tchu.worker(registry, "kill", queue_type="quorum", broker_url=url)
        assert rabbit_cluster.node_of(worker) is node
    # And a client on the leader and one on another node, each given the three URLs
    clients = [cluster_tchu.client(broker_url=_urls_from(n, rabbit_cluster)) for n in (leader, others[0])]
    for client, node in zip(clients, (leader, others[0]), strict=True):
        assert client.call("rpc.cluster.kill.square", -1, timeout=CALL_TIMEOUT) == 1
        assert rabbit_cluster.node_of(client) is node

    out = _Outcomes()
    progress = _Progress()
    threads = PUBLISHERS + CALLERS

    def work(index: int) -> None:
        client = clients[index % 2]
        for n in range(index, OPERATIONS, threads):
            if index < PUBLISHERS:
                _publish(client, n, out)
            else:
                _call(client, n, client is clients[0], out)
            progress.add()

    # When 4 threads publish confirmed events and 4 threads call, 3,000 operations in all
    began = time.monotonic()
    workers = _run_threads(threads, work)
    # And the node leading the service's queues is killed with SIGKILL once 500 are done
    progress.wait_for(lambda: progress.done >= KILL_AFTER, 60, f"{KILL_AFTER} operations")
    rabbit_cluster.kill(leader)
    killed_at = progress.done
    _join(workers, 180)
    took = time.monotonic() - began
    summary = f"leader killed after {killed_at} operations; {out.summary()}; all in {took:.1f} s"
    print(f"\n{summary}")

    # Then no caller saw an error while its deadline (or publish_timeout) had time left
    assert not out.early, f"{summary}; e.g. {out.early[:3]}"
    # And every call was answered within its deadline, after a ConnectionLost at most on the dead node
    calls = {n for n in range(OPERATIONS) if n % threads >= PUBLISHERS}
    assert not {n: f for n, f in out.failed.items() if n in calls}, summary
    assert out.results == {n: n * n for n in calls}, summary
    assert out.slowest <= CALL_TIMEOUT + 1.0, summary
    # And every event was confirmed or failed to its caller, and no confirmed event was lost
    events = {n for n in range(OPERATIONS) if n % threads < PUBLISHERS}
    assert out.confirmed | {n for n in out.failed if n in events} == events, summary
    with handled_cond:
        if not handled_cond.wait_for(lambda: out.confirmed <= set(handled), 60):
            lost = sorted(out.confirmed - set(handled))
            pytest.fail(f"{len(lost)} confirmed events never handled, e.g. {lost[:20]}; {summary}")
