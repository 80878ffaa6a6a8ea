"""A poison call (its handler kills the worker process on every delivery) is dead-lettered at the
delivery limit, its caller is told so, and the service keeps answering other calls meanwhile."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from fault_support import WorkerProcesses, get_all, is_quorum, run_lines, wait_for

from tchu_rpc import DeliveryLimitExceeded, RemoteError, TchuError, wire
from tchu_rpc.testing import TchuFactory

DELIVERY_LIMIT = 3
POISON_TIMEOUT = 30.0


@pytest.mark.timeout(120)
@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_poison_call_is_dead_lettered_at_the_delivery_limit_while_other_calls_are_answered(
    tchu: TchuFactory, workers: WorkerProcesses, tmp_path: Path, queue_type: str
) -> None:
    runs = tmp_path / "runs.txt"
    # Given a service of two worker processes with a delivery limit of 3
    service = tchu.service("poison")
    worker = workers.start(
        service, 2, TCHU_RPC_DELIVERY_LIMIT=str(DELIVERY_LIMIT), TCHU_RPC_QUEUE_TYPE=queue_type
    )
    assert is_quorum(tchu.broker_url, f"{service}.calls") == (queue_type == "quorum")
    client = tchu.client()

    # When a call whose handler kills its process on every delivery is made
    poisoned = client.call_async(
        "rpc.faults.die", {"n": -1, "poison": True, "runs": str(runs)}, timeout=POISON_TIMEOUT
    )
    # And other calls to the same service go on meanwhile
    answers: list[Any] = []
    stop = threading.Event()

    def others() -> None:
        n = 0
        while not stop.is_set():
            try:
                answers.append(client.call("rpc.faults.die", {"n": n}, timeout=20)["n"] == n)
            except TchuError as exc:
                answers.append(exc)
            n += 1

    caller = threading.Thread(target=others, name="other-calls")
    caller.start()
    try:
        error = poisoned.exception(timeout=POISON_TIMEOUT + 5)
        wait_for(lambda: len(answers) >= 5, 30, "five other calls to be answered")
    finally:
        stop.set()
        caller.join(30)

    # Then the poisoned caller gets DeliveryLimitExceeded, a RemoteError
    assert isinstance(error, DeliveryLimitExceeded), f"the poisoned call raised {error!r}"
    assert isinstance(error, RemoteError) and error.type == "DeliveryLimitExceeded", error
    # And its handler ran exactly DELIVERY_LIMIT times, each time in a process that then died
    poisoned_runs = [pid for n, _, pid in run_lines(runs) if n == -1]
    assert len(poisoned_runs) == DELIVERY_LIMIT, poisoned_runs
    # And the message waits in <service>.dead with the reason
    dead = get_all(tchu.broker_url, f"{service}.dead")
    assert len(dead) == 1, [m.headers for m in dead]
    assert "delivery limit" in str(dead[0].headers.get(wire.HEADER_ERROR))
    # And every other call was answered, correctly
    assert answers and all(a is True for a in answers), [a for a in answers if a is not True]
    assert worker.popen.poll() is None
