"""Long calls: the worker's handler time limit, and progress that keeps a caller waiting."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from kombu import Connection

from tchu_rpc import CallTimeout, HandlerTimeLimit, Registry, RemoteError, report_progress
from tchu_rpc.testing import TchuFactory, capture_logs

STEP = 0.25  # simulated work between two progress reports, well below the calls' 1 s timeout


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until `condition()` holds, failing after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


def stuck_registry(release: threading.Event, returned: threading.Event) -> Registry:
    registry = Registry()

    @registry.subscribe("rpc.slow.stuck")
    def stuck(data: Any) -> Any:
        release.wait(30)
        returned.set()
        return "too late"

    @registry.subscribe("rpc.slow.quick")
    def quick(data: Any) -> Any:
        return data

    return registry


def test_a_handler_over_the_time_limit_is_answered_acked_and_its_late_result_discarded(
    tchu: TchuFactory,
) -> None:
    release, returned = threading.Event(), threading.Event()
    worker = tchu.worker(stuck_registry(release, returned), handler_time_limit=0.5)
    client = tchu.client()
    with capture_logs() as logs:
        # When a handler runs past the limit
        with pytest.raises(HandlerTimeLimit) as info:
            client.call("rpc.slow.stuck", {}, timeout=10)

        # Then the caller gets a typed remote error, and the worker says so
        assert isinstance(info.value, RemoteError)
        assert info.value.type == "HandlerTimeLimit"
        assert events(logs, "handler_time_limit_exceeded")

        # And its only handler thread was replaced: the next call runs while the old one is stuck
        assert client.call("rpc.slow.quick", 5, timeout=10) == 5
        assert not returned.is_set()

        # When the stuck handler returns at last, its result is discarded
        release.set()
        wait_for(lambda: bool(events(logs, "late_result_discarded")))
    worker.stop()

    # And the request was acked: nothing is left in the call queue for a redelivery
    with Connection(tchu.broker_url) as conn:
        queue = conn.default_channel.queue_declare(f"{worker.service}.calls", passive=True)
    assert queue.message_count == 0


def test_a_worker_without_a_time_limit_warns_of_the_consumer_timeout(tchu: TchuFactory) -> None:
    release, returned = threading.Event(), threading.Event()
    with capture_logs() as logs:
        tchu.worker(stuck_registry(release, returned), handler_time_limit=None)
    [warning] = events(logs, "consumer_timeout_exceeded")
    assert warning["broker_consumer_timeout"] == 1800.0
    assert warning["handler_time_limit"] is None


def test_a_worker_with_the_default_time_limit_does_not_warn(tchu: TchuFactory) -> None:
    with capture_logs() as logs:
        tchu.worker(stuck_registry(threading.Event(), threading.Event()))
    assert not events(logs, "consumer_timeout_exceeded")


def progress_registry(reports: list[bool]) -> Registry:
    registry = Registry()

    @registry.subscribe("rpc.slow.progress")
    def with_progress(data: Any) -> Any:
        for step in range(data["steps"]):
            reports.append(report_progress({"step": step}))
            time.sleep(STEP)  # the work
        return "done"

    @registry.subscribe("rpc.slow.silent")
    def silent(data: Any) -> Any:
        time.sleep(STEP * data["steps"])  # the work
        return "done"

    return registry


def test_progress_keeps_a_call_alive_past_its_timeout(tchu: TchuFactory) -> None:
    reports: list[bool] = []
    tchu.worker(progress_registry(reports))
    seen: list[Any] = []

    # When a handler works for 2 s and reports progress every 0.25 s, on a call with a 1 s timeout
    result = tchu.client().call("rpc.slow.progress", {"steps": 8}, timeout=1, on_progress=seen.append)

    # Then the call completes, once, and every report reached the caller's callback, in order
    assert result == "done"
    assert reports == [True] * 8
    assert seen == [{"step": step} for step in range(8)]


def test_progress_works_with_call_async_and_msgpack(tchu: TchuFactory) -> None:
    tchu.worker(progress_registry([]))
    future = tchu.client(serializer="msgpack").call_async("rpc.slow.progress", {"steps": 8}, timeout=1)
    assert future.result(timeout=10) == "done"


def test_a_call_without_progress_still_times_out(tchu: TchuFactory) -> None:
    tchu.worker(progress_registry([]))
    with pytest.raises(CallTimeout):
        tchu.client().call("rpc.slow.silent", {"steps": 8}, timeout=1)


def test_progress_does_not_extend_a_call_past_its_max_timeout(tchu: TchuFactory) -> None:
    tchu.worker(progress_registry([]))
    with pytest.raises(CallTimeout):
        tchu.client().call("rpc.slow.progress", {"steps": 12}, timeout=1, max_timeout=1.5)


def test_max_timeout_below_timeout_is_refused(tchu: TchuFactory) -> None:
    with pytest.raises(ValueError, match="max_timeout"):
        tchu.client().call("rpc.slow.progress", {}, timeout=5, max_timeout=1)


def test_progress_outside_a_call_handler_reports_nothing(tchu: TchuFactory) -> None:
    assert report_progress("nobody listens") is False
    results: list[bool] = []
    done = threading.Event()
    registry = Registry()

    @registry.subscribe("slow.event")
    def on_event(data: Any) -> None:
        results.append(report_progress())
        done.set()

    tchu.worker(registry)
    tchu.client().publish("slow.event", {})
    assert done.wait(10)
    assert results == [False]


def test_progress_after_the_caller_gave_up_is_dropped_quietly(tchu: TchuFactory) -> None:
    gave_up, reported = threading.Event(), threading.Event()
    registry = Registry()

    @registry.subscribe("rpc.slow.late")
    def late(data: Any) -> Any:
        gave_up.wait(10)
        report_progress("still here")
        reported.set()
        return "late"

    tchu.worker(registry)
    client = tchu.client()
    with capture_logs() as logs:
        with pytest.raises(CallTimeout):
            client.call("rpc.slow.late", {}, timeout=0.5)
        gave_up.set()
        # The late reply follows the progress on the same channel: once it is dropped, both arrived
        wait_for(lambda: bool(events(logs, "reply_dropped")))
    # Only the reply was worth a warning (progress_dropped is a debug event)
    assert reported.is_set()
    assert len(events(logs, "reply_dropped")) == 1


def test_a_progress_callback_that_raises_does_not_break_the_call(tchu: TchuFactory) -> None:
    tchu.worker(progress_registry([]))

    def broken(info: Any) -> None:
        raise RuntimeError("callback bug")

    with capture_logs() as logs:
        client = tchu.client()
        assert client.call("rpc.slow.progress", {"steps": 2}, timeout=5, on_progress=broken) == "done"
        # The callbacks run on their own thread, in order: one more after them marks their end
        flushed = threading.Event()
        client._callbacks.run(flushed.set)
        assert flushed.wait(5)
    assert len(events(logs, "callback_failed")) == 2
