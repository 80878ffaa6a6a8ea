"""The connection of a worker with one call thread fails while a call handler runs on its I/O thread.

With `call_concurrency=1` the worker's I/O thread runs each call handler itself ("inline") and a
standby thread serves the connection while a handler runs long. When that connection fails, the
standby must drop it and reconnect with the handler still blocked: events keep flowing, the broker
redelivers the request, and the redelivered request's time limit is enforced. The blocked handler's
late result is discarded once it returns.

The worker reaches the broker through the fault proxy; the client talks to the broker directly, so
only the worker's connection fails, and the caller stays there for the answer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import pytest
from fault_support import wait_for
from proxy import FaultProxy

from tchu_rpc import HandlerTimeLimit, Registry, RemoteError, TchuError, current_delivery
from tchu_rpc.testing import TchuFactory, capture_logs

HANDLER_TIME_LIMIT = 2.0
HEARTBEAT = 1.0
#: Time for the blocked call: heartbeats to notice a black hole (about 2-3 s), a reconnection, the
#: redelivered request's time limit, and room for a loaded machine.
CALL_TIMEOUT = 20.0
#: Bound on each wait for something the worker must do (reconnect, handle an event, log).
WITHIN = 10.0
#: A blocked handler returns by then even if the test never releases it.
BLOCKS_AT_MOST = 60.0


@dataclass
class Run:
    """One run of the blocking handler."""

    thread: str
    redelivered: bool
    correlation_id: str | None


@dataclass
class Probe:
    """What the handlers saw, with a condition to wait on."""

    runs: list[Run] = field(default_factory=list)
    returned: int = 0
    events: list[int] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def note(self, what: Callable[[], object]) -> None:
        with self.changed:
            what()
            self.changed.notify_all()

    def wait(self, condition: Callable[[], bool], what: str) -> None:
        with self.changed:
            if not self.changed.wait_for(condition, WITHIN):
                raise AssertionError(f"timed out after {WITHIN} s waiting for {what}")


@pytest.fixture
def release(tchu: TchuFactory) -> Iterator[threading.Event]:
    """Yield the event that lets blocked handlers return; set at teardown, before the worker stops."""
    event = threading.Event()
    yield event
    event.set()


def _registry(probe: Probe, release: threading.Event) -> Registry:
    registry = Registry()

    @registry.subscribe("rpc.inline.block")
    def block(data: None) -> str:
        delivery = current_delivery()
        assert delivery is not None
        run = Run(threading.current_thread().name, delivery.redelivered, delivery.correlation_id)
        probe.note(lambda: probe.runs.append(run))
        release.wait(BLOCKS_AT_MOST)
        probe.note(lambda: setattr(probe, "returned", probe.returned + 1))
        return "late"

    @registry.subscribe("rpc.inline.quick")
    def quick(data: None) -> str:
        return threading.current_thread().name

    @registry.subscribe("inline.happened")
    def happened(data: dict[str, int]) -> None:
        probe.note(lambda: probe.events.append(data["n"]))

    return registry


def _fail(proxy: FaultProxy, fault: str) -> None:
    """Cut every proxied connection with RST, or make them silent for good (new ones get through)."""
    if fault == "reset":
        assert proxy.reset_all() >= 1
    else:
        proxy.blackhole()
        proxy.restore()  # only new connections: a black-holed one stays dead


def _lost(logs: Sequence[Mapping[str, Any]], loop: str) -> int | None:
    """Return the index of the first `connection_lost` of `loop` in `logs`, if any."""
    return next(
        (i for i, e in enumerate(logs) if e["event"] == "connection_lost" and e["loop"] == loop), None
    )


def _exceeded(logs: Sequence[Mapping[str, Any]], lost_at: int) -> list[tuple[bool, str]]:
    """Return (after the connection was lost, correlation id) of each `handler_time_limit_exceeded`."""
    return [
        (i > lost_at, e["correlation_id"])
        for i, e in enumerate(logs)
        if e["event"] == "handler_time_limit_exceeded"
    ]


def _discarded(logs: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """Return (event, correlation id) of each late result the worker discarded."""
    return sorted(
        (e["event"], e["correlation_id"])
        for e in logs
        if e["event"] in ("message_abandoned", "late_result_discarded")
    )


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fault", ["reset", "blackhole"])
def test_a_worker_running_a_call_inline_reconnects_and_enforces_the_time_limit_of_the_redelivered_call(
    fault_proxy: FaultProxy,
    fault_proxy_url: str,
    tchu: TchuFactory,
    release: threading.Event,
    fault: str,
) -> None:
    # (The proxy comes first, so that it is torn down last: the worker stops while it still
    # reaches the broker.)
    probe = Probe()
    # Given a worker with one call thread (handlers run inline) and a 2 s time limit, through the
    # proxy, and a client on the broker
    worker = tchu.worker(
        _registry(probe, release),
        "inline",
        broker_url=fault_proxy_url,
        call_concurrency=1,
        fast_path=True,  # the inline shortcut is part of it
        handler_time_limit=HANDLER_TIME_LIMIT,
        heartbeat=HEARTBEAT,
    )
    io_thread = f"tchu-worker-{worker.service}"
    client = tchu.client()
    assert client.call("rpc.inline.quick", None, timeout=5) == io_thread, "calls do not run inline"

    with capture_logs() as logs:
        # And a call whose handler blocks, running on the worker's I/O thread
        answered: Future[float] = Future()
        call = client.call_async("rpc.inline.block", None, timeout=CALL_TIMEOUT)
        call.add_done_callback(lambda _: answered.set_result(time.monotonic()))
        probe.wait(lambda: len(probe.runs) == 1, "the blocking handler to start")
        first = probe.runs[0]
        assert (first.thread, first.redelivered) == (io_thread, False)

        # When the worker's connection fails: cut with RST, or gone silent
        failed_at = time.monotonic()
        _fail(fault_proxy, fault)

        # Then the worker reconnects while the handler still blocks: an event published after the
        # failure is handled
        client.publish("inline.happened", {"n": 1}, timeout=5)
        probe.wait(lambda: 1 in probe.events, "the event published after the failure (a reconnection)")
        assert probe.returned == 0
        lost_at = _lost(logs, io_thread)
        assert lost_at is not None, "the worker never logged the failure"

        # And the broker redelivers the request, which runs again on a handler thread (the I/O
        # thread is still away) ...
        probe.wait(lambda: len(probe.runs) == 2, "the redelivered request to run")
        second = probe.runs[1]
        assert (second.redelivered, second.correlation_id) == (True, first.correlation_id)
        assert second.thread != io_thread

        # ... and its time limit, counted from its redelivery, answers the caller: HandlerTimeLimit
        error = call.exception(timeout=CALL_TIMEOUT)
        assert isinstance(error, HandlerTimeLimit), repr(error)
        assert isinstance(error, RemoteError) and isinstance(error, TchuError)
        took = answered.result(timeout=WITHIN) - failed_at
        assert took >= HANDLER_TIME_LIMIT, f"answered {took:.2f} s after the failure: not by the redelivery"
        assert probe.returned == 0
        # A black hole is noticed by heartbeats 1-2.5 s after it began, so the first run's own limit
        # may expire first, on the silent connection: its answer went into the black hole.
        redelivered = (True, first.correlation_id)
        expired_first = [[(False, first.correlation_id), redelivered]] if fault == "blackhole" else []
        exceeded = _exceeded(logs, lost_at)
        assert exceeded in [[redelivered], *expired_first], logs

        # And the next call is answered, on the handler thread that replaced the timed-out one
        assert client.call("rpc.inline.quick", None, timeout=5) != io_thread

        # When the blocked handlers return at last
        release.set()
        probe.wait(lambda: probe.returned == 2, "the released handlers to return")

        # Then both late results are discarded: the first run's as abandoned with its connection
        # (or as too late, when its own limit expired), the redelivered run's as too late
        wait_for(lambda: len(_discarded(logs)) == 2, WITHIN, "both late results to be discarded")
        late = ("late_result_discarded", first.correlation_id)
        abandoned = ("message_abandoned", first.correlation_id)
        assert _discarded(logs) == sorted([late, late if len(exceeded) == 2 else abandoned]), logs

    # And the I/O thread is back: calls run inline again
    assert client.call("rpc.inline.quick", None, timeout=5) == io_thread
