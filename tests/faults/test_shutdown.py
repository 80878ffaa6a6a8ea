"""SIGTERM to a `tchu-rpc worker` supervisor with 100 calls in flight loses none of them."""

from __future__ import annotations

import signal
import time
from concurrent import futures

import pytest
from fault_support import WorkerProcesses, wait_for

from tchu_rpc.testing import TchuFactory

CALLS = 100
HANDLER_SECONDS = 0.02


@pytest.mark.timeout(120)
def test_sigterm_with_100_calls_in_flight_loses_none_and_exits_0(
    tchu: TchuFactory, workers: WorkerProcesses
) -> None:
    # Given two supervisors of two processes each serving one service
    service = tchu.service("shutdown")
    leaving = workers.start(service, 2)
    staying = workers.start(service, 2)
    client = tchu.client()

    # And 100 calls in flight, each running a 20 ms handler
    pending = [
        client.call_async("rpc.faults.work", {"n": n, "sleep": HANDLER_SECONDS}, timeout=30)
        for n in range(CALLS)
    ]
    wait_for(lambda: sum(f.done() for f in pending) >= 8, 20, "the first calls to be answered", poll=0.001)

    # When the first supervisor gets SIGTERM
    leaving.popen.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    answered_before = sum(f.done() for f in pending)

    # Then every call is answered with its own result
    _, not_done = futures.wait(pending, timeout=30)
    assert not not_done, f"{len(not_done)} calls never answered"
    results = [f.result() for f in pending]
    assert [r["n"] for r in results] == list(range(CALLS))
    assert answered_before < CALLS, "every call was answered before the SIGTERM: the test proved nothing"
    # And the signalled supervisor exits 0 after letting its children finish, killing none
    assert leaving.popen.wait(30) == 0, leaving.log_text()
    log = leaving.log_text()
    assert "supervisor_stopped" in log
    assert "worker_process_killed" not in log
    assert "shutdown_grace_expired" not in log
    assert time.monotonic() - signalled < 15
    # And the other supervisor answered the rest (it is still running)
    assert staying.popen.poll() is None
    pids = {r["pid"] for r in results}
    assert pids & staying.ready, "the remaining supervisor answered none of the calls"
