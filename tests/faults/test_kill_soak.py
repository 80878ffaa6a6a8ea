"""Soak: 5,000 calls from 8 threads to 4 worker processes while a child is SIGKILLed every 0.5 s.

Each kill makes the broker redeliver what the child held unacked, so some handlers run twice; the
callers must still get exactly one, correct, result each. A duplicate reply (the child died after
its reply went out, before its ack) must be dropped by the client as such (`reply_dropped` for a
settled call), never handed to a caller.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import Counter
from concurrent import futures
from pathlib import Path
from typing import Any

import pytest
from fault_support import WorkerProcesses, run_lines

from tchu_rpc import Client
from tchu_rpc.testing import TchuFactory, capture_logs

CALLS = 5000
THREADS = 8
PROCESSES = 4
KILL_EVERY = 0.5
MAX_KILLS = 30
TIMEOUT = 30.0
HANDLER_SECONDS = 0.005  # stretches the run, so that it sees MAX_KILLS kills


class Killer(threading.Thread):
    """SIGKILL a random worker child of `supervisor` every KILL_EVERY seconds, MAX_KILLS at most."""

    def __init__(self, children: Any) -> None:
        super().__init__(name="killer", daemon=True)
        self.children = children
        self.killed: list[int] = []
        self.done = threading.Event()
        self.rng = random.Random(7)

    def run(self) -> None:
        while len(self.killed) < MAX_KILLS and not self.done.wait(KILL_EVERY):
            alive = sorted(self.children())
            if not alive:
                continue  # all being restarted
            victim = self.rng.choice(alive)
            try:
                os.kill(victim, signal.SIGKILL)
            except ProcessLookupError:
                continue
            self.killed.append(victim)


def _call_all(client: Client, runs: Path) -> dict[int, Any]:
    """Make CALLS calls from THREADS threads; return each call's result or exception by n."""
    outcomes: dict[int, Any] = {}
    numbers = iter(range(CALLS))
    lock = threading.Lock()

    def caller() -> None:
        while True:
            with lock:
                n = next(numbers, None)
            if n is None:
                return
            try:
                outcomes[n] = client.call(
                    "rpc.faults.work", {"n": n, "runs": str(runs), "sleep": HANDLER_SECONDS}, timeout=TIMEOUT
                )
            except Exception as exc:  # judged by the test
                outcomes[n] = exc

    with futures.ThreadPoolExecutor(THREADS, thread_name_prefix="caller") as pool:
        for future in [pool.submit(caller) for _ in range(THREADS)]:
            future.result()
    return outcomes


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_5000_calls_survive_a_child_killed_every_half_second(
    tchu: TchuFactory, workers: WorkerProcesses, tmp_path: Path
) -> None:
    runs = tmp_path / "runs.txt"
    # Given four worker processes of one service
    service = tchu.service("soak")
    worker = workers.start(service, PROCESSES)
    client = tchu.client()

    with capture_logs() as logs:
        # When 5,000 calls are made from 8 threads while a child is killed every half second
        killer = Killer(worker.children)
        started = time.monotonic()
        killer.start()
        try:
            outcomes = _call_all(client, runs)
        finally:
            killer.done.set()
            killer.join(5)
        elapsed = time.monotonic() - started
        # (a duplicate reply may still be in flight: wait until every child answered a ping)
        survivors = worker.children()
        pinged: set[int] = set()
        deadline = time.monotonic() + 30
        while not survivors <= pinged and time.monotonic() < deadline:
            pinged.add(client.call("rpc.faults.ping", None, timeout=10))

    # Then every call got its own, correct result
    wrong = {n: o for n, o in outcomes.items() if not (isinstance(o, dict) and o.get("n") == n)}
    assert len(outcomes) == CALLS
    assert not wrong, f"{len(wrong)} calls failed or got a wrong result, e.g. {list(wrong.items())[:5]}"
    assert len(killer.killed) >= 5, (
        f"only {len(killer.killed)} kills in {elapsed:.1f} s: the test proved little"
    )
    # And a duplicate reply was only ever dropped as the duplicate of a settled call
    dropped = [e for e in logs if e["event"] == "reply_dropped"]
    outcomes_of_dropped = Counter(e.get("call_outcome") for e in dropped)
    assert set(outcomes_of_dropped) <= {"ok"}, (
        f"replies dropped for calls never settled: {outcomes_of_dropped}"
    )
    # And each one is explained by a handler that ran again after a kill
    ran = Counter(n for n, _, _ in run_lines(runs) if 0 <= n < CALLS)
    assert set(ran) == set(range(CALLS)), "a call was answered without its handler running"
    reruns = sum(count - 1 for count in ran.values())
    assert len(dropped) <= reruns, f"{len(dropped)} duplicate replies but only {reruns} handler re-runs"
