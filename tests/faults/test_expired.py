"""Calls that expire while their worker process is paused (SIGSTOP) never run once it resumes."""

from __future__ import annotations

import os
import signal
from concurrent import futures
from pathlib import Path

import pytest
from fault_support import WorkerProcesses, queue_depth, run_lines

from tchu_rpc import CallTimeout
from tchu_rpc.testing import TchuFactory

CALLS = 50
TIMEOUT = 0.5


@pytest.mark.timeout(60)
def test_calls_expired_while_the_worker_was_paused_never_run(
    tchu: TchuFactory, workers: WorkerProcesses, tmp_path: Path
) -> None:
    runs = tmp_path / "runs.txt"
    # Given one worker process, paused
    service = tchu.service("expired")
    worker = workers.start(service, 1)
    (child,) = worker.ready
    client = tchu.client()
    os.kill(child, signal.SIGSTOP)
    try:
        # When 50 calls with a 0.5 s timeout are made
        pending = [
            client.call_async("rpc.faults.work", {"n": n, "runs": str(runs)}, timeout=TIMEOUT)
            for n in range(CALLS)
        ]
        futures.wait(pending, timeout=TIMEOUT + 10)
        # Then every one of them raises CallTimeout
        errors = [f.exception(timeout=0) for f in pending]
        assert all(isinstance(e, CallTimeout) for e in errors), {repr(e) for e in errors}
    finally:
        os.kill(child, signal.SIGCONT)

    # And once the worker resumes, a fresh call succeeds (it queued behind the expired ones)
    fresh = client.call("rpc.faults.work", {"n": CALLS, "runs": str(runs)}, timeout=10)
    assert fresh == {"n": CALLS, "pid": child}
    # And the handler ran for the fresh call only, never for the expired ones
    assert run_lines(runs) == [(CALLS, False, child)]
    assert queue_depth(tchu.broker_url, f"{service}.calls") == 0
