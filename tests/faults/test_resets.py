"""Connection resets through the fault proxy while 8 threads make 2,000 calls.

Client and worker both reach the broker through the proxy; a caller thread cuts every proxied
connection (RST both ways) each time the count of finished calls passes 100, 300, ..., 1,900: ten
resets, driven by progress rather than a timer. No call may outlive its timeout; without
`idempotent` a call caught by a reset fails promptly with ConnectionLost; with it every call succeeds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from proxy import FaultProxy

from tchu_rpc import Client, ConnectionLost, Registry, TchuError
from tchu_rpc.testing import TchuFactory, capture_logs

CALLS = 2000
THREADS = 8
RESET_EVERY = 200
RESETS = 10
TIMEOUT = 5.0
SLACK = 1.0  # a call must return or raise within TIMEOUT + SLACK
PROMPT = 2.0  # a call caught by a reset must fail within this many seconds of its start


@dataclass
class Outcome:
    n: int
    result: Any
    error: BaseException | None
    elapsed: float


@dataclass
class Run:
    outcomes: list[Outcome] = field(default_factory=list)
    cuts: list[int] = field(default_factory=list)  # connections each reset cut


def _registry() -> Registry:
    registry = Registry()

    @registry.subscribe("rpc.resets.double")
    def double(data: dict[str, int]) -> dict[str, int]:
        return {"n": data["n"], "double": data["n"] * 2}

    return registry


def _drive(
    proxy: FaultProxy, call: Callable[[int], Any], every: int = RESET_EVERY, resets: int = RESETS
) -> Run:
    """Make CALLS calls from THREADS threads; reset the proxy at every/2, 3*every/2, ... finished calls."""
    run = Run()
    lock = threading.Lock()
    numbers = iter(range(CALLS))

    def caller() -> None:
        while True:
            with lock:
                n = next(numbers, None)
            if n is None:
                return
            started = time.monotonic()
            try:
                outcome = Outcome(n, call(n), None, 0.0)
            except Exception as exc:  # anything: the assertions below judge it
                outcome = Outcome(n, None, exc, 0.0)
            outcome.elapsed = time.monotonic() - started
            with lock:
                run.outcomes.append(outcome)
                due = len(run.outcomes) % every == every // 2 and len(run.cuts) < resets
                if due:
                    run.cuts.append(proxy.reset_all())

    threads = [threading.Thread(target=caller, name=f"caller-{i}") for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(CALLS * (TIMEOUT + SLACK))
    assert not any(t.is_alive() for t in threads), "a caller thread is still blocked"
    return run


def _check_bounded(run: Run, resets: int = RESETS) -> None:
    assert len(run.outcomes) == CALLS
    assert len(run.cuts) == resets
    assert all(cut >= 1 for cut in run.cuts), f"a reset found no connection to cut: {run.cuts}"
    slow = [o for o in run.outcomes if o.elapsed > TIMEOUT + SLACK]
    assert not slow, f"{len(slow)} calls outlived their timeout, e.g. {slow[:3]}"
    foreign = [o for o in run.outcomes if o.error is not None and not isinstance(o.error, TchuError)]
    assert not foreign, f"non-TchuError escaped: {[repr(o.error) for o in foreign[:5]]}"
    wrong = [o for o in run.outcomes if o.error is None and o.result != {"n": o.n, "double": 2 * o.n}]
    assert not wrong, f"wrong results: {wrong[:5]}"


def _client(tchu: TchuFactory, url: str) -> Client:
    return tchu.client(broker_url=url)


# A worker with one call thread runs each handler on its I/O thread (a standby thread serves the
# connection meanwhile); with more, handlers run on a lane of threads: resets must not care.
# The tests name `fault_proxy` before `tchu`, so that the proxy is torn down last: the worker stops
# while it still reaches the broker (else it waits out kombu's 2 s pause between connection attempts).
call_concurrency = pytest.mark.parametrize("call_concurrency", [1, 4])


@pytest.mark.timeout(120)
@call_concurrency
def test_resets_fail_in_flight_calls_promptly_with_connection_lost(
    fault_proxy: FaultProxy, fault_proxy_url: str, tchu: TchuFactory, call_concurrency: int
) -> None:
    # Given a worker and a client, both connected through the proxy
    tchu.worker(_registry(), "resets", broker_url=fault_proxy_url, call_concurrency=call_concurrency)
    client = _client(tchu, fault_proxy_url)
    assert client.call("rpc.resets.double", {"n": -1}, timeout=TIMEOUT) == {"n": -1, "double": -2}

    # When 2,000 calls are made from 8 threads while the proxy resets every connection 10 times
    run = _drive(fault_proxy, lambda n: client.call("rpc.resets.double", {"n": n}, timeout=TIMEOUT))

    # Then no call hung, every success is right, and every failure is a prompt ConnectionLost
    _check_bounded(run)
    failed = [o for o in run.outcomes if o.error is not None]
    not_lost = [
        f"{o.n}: {o.error!r} after {o.elapsed:.2f} s"
        for o in failed
        if not isinstance(o.error, ConnectionLost)
    ]
    assert not not_lost, f"{len(not_lost)} failures were not ConnectionLost: {not_lost[:5]}"
    slow = [f"{o.n}: {o.elapsed:.2f} s" for o in failed if o.elapsed > PROMPT]
    assert not slow, f"{len(slow)} failed calls took longer than {PROMPT} s: {slow[:5]}"
    assert failed, "no call was in flight at any reset: the test proved nothing"


@pytest.mark.timeout(120)
@call_concurrency
def test_idempotent_calls_all_succeed_across_resets(
    fault_proxy: FaultProxy, fault_proxy_url: str, tchu: TchuFactory, call_concurrency: int
) -> None:
    # Given a worker and a client, both connected through the proxy
    tchu.worker(_registry(), "resets", broker_url=fault_proxy_url, call_concurrency=call_concurrency)
    client = _client(tchu, fault_proxy_url)

    def call(n: int) -> Any:
        return client.call("rpc.resets.double", {"n": n}, timeout=TIMEOUT, idempotent=True)

    # When 2,000 idempotent calls are made while the proxy resets every connection 10 times
    run = _drive(fault_proxy, call)

    # Then every call got its own correct result, none hung
    _check_bounded(run)
    failed = [f"{o.n}: {o.error!r} after {o.elapsed:.2f} s" for o in run.outcomes if o.error is not None]
    assert not failed, f"{len(failed)} idempotent calls failed: {failed[:5]}"


@pytest.mark.timeout(120)
@call_concurrency
def test_worker_that_survived_resets_stops_at_once(
    fault_proxy: FaultProxy, fault_proxy_url: str, tchu: TchuFactory, call_concurrency: int
) -> None:
    # Given a worker through the proxy that lived through 40 resets under load
    worker = tchu.worker(_registry(), "resets", broker_url=fault_proxy_url, call_concurrency=call_concurrency)
    client = _client(tchu, fault_proxy_url)
    run = _drive(fault_proxy, lambda n: client.call("rpc.resets.double", {"n": n}, timeout=TIMEOUT), 50, 40)
    _check_bounded(run, resets=40)
    assert client.call("rpc.resets.double", {"n": 1}, timeout=TIMEOUT) == {"n": 1, "double": 2}

    # When it is stopped, idle, with a long grace period
    with capture_logs() as logs:
        started = time.monotonic()
        worker.stop(timeout=10)
        took = time.monotonic() - started

    # Then it stops at once: nothing is in flight, so there is nothing to wait for
    expired = [e for e in logs if e["event"] == "shutdown_grace_expired"]
    assert not expired, f"stop() waited out its grace for messages it no longer holds: {expired}"
    assert took < 2.0, f"stop() took {took:.1f} s"


@pytest.mark.timeout(120)
def test_a_reset_while_a_lone_caller_reads_its_own_reply_fails_it_promptly_and_the_next_call_works(
    tchu: TchuFactory, fault_proxy: FaultProxy, fault_proxy_url: str
) -> None:
    # Given a worker on the broker, a client through the proxy, and a handler that, for every 10th
    # request, holds its reply until the proxy has cut the client's connection
    waiting = threading.Event()
    cut = threading.Event()
    registry = Registry()

    @registry.subscribe("rpc.resets.double")
    def double(data: dict[str, int]) -> dict[str, int]:
        if data["n"] % 10 == 5:
            waiting.set()
            assert cut.wait(TIMEOUT), "the proxy never cut"
        return {"n": data["n"], "double": data["n"] * 2}

    tchu.worker(registry, "resets")
    client = _client(tchu, fault_proxy_url)
    cuts: list[int] = []

    def cutter() -> None:
        for _ in range(RESETS):
            if not waiting.wait(TIMEOUT * 3):
                return
            waiting.clear()
            cuts.append(fault_proxy.reset_all())
            cut.set()

    thread = threading.Thread(target=cutter, name="cutter")
    thread.start()
    outcomes = []
    try:
        # When one thread calls 100 times in sequence (each call alone in flight: its caller reads
        # the connection itself) and 10 of the calls are cut while they wait
        for n in range(100):
            started = time.monotonic()
            try:
                outcomes.append(
                    Outcome(n, client.call("rpc.resets.double", {"n": n}, timeout=TIMEOUT), None, 0)
                )
            except TchuError as exc:
                outcomes.append(Outcome(n, None, exc, 0))
            outcomes[-1].elapsed = time.monotonic() - started
            cut.clear()
    finally:
        cut.set()
        thread.join(TIMEOUT * 4)

    # Then each cut call failed promptly with ConnectionLost and every other call succeeded
    assert len(cuts) == RESETS and all(c >= 1 for c in cuts), cuts
    failed = {o.n: o for o in outcomes if o.error is not None}
    assert sorted(failed) == list(range(5, 100, 10)), {n: repr(o.error) for n, o in failed.items()}
    assert all(isinstance(o.error, ConnectionLost) and o.elapsed < PROMPT for o in failed.values()), [
        (o.n, repr(o.error), round(o.elapsed, 2)) for o in failed.values()
    ]
    wrong = [o for o in outcomes if o.error is None and o.result != {"n": o.n, "double": 2 * o.n}]
    assert not wrong, wrong[:5]
