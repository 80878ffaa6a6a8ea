"""SystemExit or KeyboardInterrupt in a handler stops the worker as SIGTERM does; the message is kept.

Issue 11 (F): they were caught as handler errors, so the message was dead-lettered ("worker error:
SystemExit") and the worker went on. The worker must stop, and the broker redeliver the message.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kombu import Connection

from tchu_rpc import Client, HandlerTimeLimit, Registry, Worker, current_delivery
from tchu_rpc.testing import TchuFactory

WAIT = 15.0  # bound on each wait; the worker's shutdown_grace in these tests is 10 s


class ExitOnce:
    """A handler that raises `exc_type` on its first run and returns the data after that."""

    def __init__(self, exc_type: type[BaseException]) -> None:
        self.exc_type = exc_type
        self.runs: list[bool] = []  # whether each run's delivery was redelivered
        self.handled = threading.Event()

    def __call__(self, data: Any) -> Any:
        delivery = current_delivery()
        assert delivery is not None
        self.runs.append(delivery.redelivered)
        if len(self.runs) == 1:
            raise self.exc_type("the handler asks the process to exit")
        self.handled.set()
        return data


class RunningWorker:
    """A worker serving in its own thread with `run()`, which returns once the worker stopped."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.raised: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="run-worker", daemon=True)

    def _run(self) -> None:
        try:
            self.worker.run()
        except BaseException as exc:  # the test reads it; an escaped one would fail the session
            self.raised = exc


@pytest.fixture
def first_worker(tchu: TchuFactory) -> Iterator[Callable[[Registry], RunningWorker]]:
    """Start `Worker.run()` for the service "exits" in a thread; stop it at teardown if still running."""
    started: list[RunningWorker] = []

    def start(registry: Registry) -> RunningWorker:
        worker = Worker(queue=tchu.service("exits"), registry=registry, settings=tchu.settings)
        running = RunningWorker(worker)
        running.thread.start()
        started.append(running)
        return running

    yield start
    for running in started:
        running.worker.stop(5)
        running.thread.join(WAIT)


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll `condition` (the broker's state: nothing signals it here) until true, or fail after WAIT."""
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {WAIT} s waiting for {what}"
        time.sleep(0.05)


def declared(tchu: TchuFactory, queue: str) -> Any:
    """Return `queue`'s passive declare-ok (message and consumer counts), or None if it does not exist."""
    with Connection(tchu.broker_url, connect_timeout=5) as conn:
        try:
            return conn.default_channel.queue_declare(queue, passive=True)
        except Exception:  # NOT_FOUND: not declared yet
            return None


def consumers(tchu: TchuFactory, queue: str) -> int:
    declare_ok = declared(tchu, queue)
    return 0 if declare_ok is None else int(declare_ok.consumer_count)


def dead_letters(tchu: TchuFactory, queue: str) -> int:
    return int(declared(tchu, queue).message_count)


def send(kind: str, client: Client) -> Callable[[], Any]:
    """Send the call or the event; return how to get its outcome at the end."""
    if kind == "call":
        future = client.call_async("rpc.exits.once", "payload", timeout=3 * WAIT)
        return lambda: future.result(timeout=3 * WAIT)
    client.publish("exits.once", "payload")
    return lambda: None


@pytest.mark.timeout(90)
@pytest.mark.parametrize("exc_type", [SystemExit, KeyboardInterrupt])
@pytest.mark.parametrize("kind", ["call", "event"])
def test_a_handler_raising_an_exit_stops_the_worker_and_its_message_is_redelivered(
    tchu: TchuFactory,
    first_worker: Callable[[Registry], RunningWorker],
    kind: str,
    exc_type: type[BaseException],
) -> None:
    # Given a worker whose handler raises `exc_type` the first time it runs
    handler = ExitOnce(exc_type)
    registry = Registry()
    registry.add("rpc.exits.once" if kind == "call" else "exits.once", handler)
    running = first_worker(registry)
    queue = f"{tchu.prefix}.exits.{'calls' if kind == 'call' else 'events'}"
    dead = f"{tchu.prefix}.exits.dead"
    wait_until(lambda: bool(consumers(tchu, queue) and declared(tchu, dead)), "the first worker to consume")
    client = tchu.client()

    # When a message reaches that handler
    outcome = send(kind, client)

    # Then the worker stops by itself, as on SIGTERM, and does not dead-letter the message
    wait_until(lambda: not running.thread.is_alive() or bool(dead_letters(tchu, dead)), "the worker to stop")
    stopped = not running.thread.is_alive()
    assert dead_letters(tchu, dead) == 0, f"dead-lettered as a handler error (worker stopped: {stopped})"
    assert stopped, f"the worker still runs after the handler raised {exc_type.__name__}"
    assert handler.runs == [False]

    # When a second worker starts on the same service
    tchu.worker(registry, name="exits")

    # Then it gets the message again, redelivered, and handles it (a caller still waiting gets the answer)
    assert handler.handled.wait(WAIT), "the message was not redelivered to the second worker"
    assert handler.runs == [False, True]
    assert outcome() == ("payload" if kind == "call" else None)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("threads", [1, 2], ids=["inline", "lane"])
def test_a_handler_exiting_after_its_time_limit_settles_its_call_once(
    tchu: TchuFactory, threads: int
) -> None:
    # Given a call handler that runs past the time limit until the test releases it, then exits
    release = threading.Event()
    registry = Registry()

    @registry.subscribe("rpc.exits.late")
    def late(data: Any) -> Any:
        release.wait(WAIT)
        raise SystemExit("the handler asks the process to exit, after its caller was answered")

    worker = tchu.worker(registry, name="exits", handler_time_limit=0.5, call_concurrency=threads)
    client = tchu.client()
    with pytest.raises(HandlerTimeLimit):
        client.call("rpc.exits.late", {}, timeout=WAIT)
    wait_until(lambda: worker._settler.inflight == 0, "the answered call to be settled")

    # When the handler exits at last
    released = time.monotonic()
    release.set()

    # Then the worker stops without waiting its grace, and the call was settled once, not twice
    wait_until(lambda: worker._stopped, "the worker to stop")
    assert time.monotonic() - released < worker.settings.shutdown_grace / 2
    assert worker._settler.inflight == 0
