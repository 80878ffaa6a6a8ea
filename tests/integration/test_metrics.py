"""Prometheus metrics: recorded by middleware in-process, and served by a worker with several processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from tchu_rpc import CallTimeout, NoRoute, Registry, RemoteError
from tchu_rpc.contrib.prometheus import Metrics
from tchu_rpc.testing import TchuFactory

HANDLERS = str(Path(__file__).with_name("metrics_handlers.py"))
WAIT = 10.0


def _until(check: Callable[[], bool], what: str, within: float = WAIT) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within} s: {what}")
        time.sleep(0.05)


def test_metrics_record_calls_events_and_outcomes_on_both_sides(tchu: TchuFactory) -> None:
    # Given a worker and a client with metrics on an application's own registry
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    handled = threading.Semaphore(0)
    handlers = Registry()
    handlers.subscribe("rpc.m.echo")(lambda data: data)

    @handlers.subscribe("rpc.m.fail")
    def fail(data: Any) -> None:
        raise ValueError("no")

    handlers.subscribe("m.happened")(lambda data: handled.release())
    worker = tchu.worker(handlers, middleware=[metrics.worker("svc")])
    client = tchu.client(middleware=[metrics.client()])
    # When it makes 3 good calls, 2 failing ones, and publishes 4 events
    for n in range(3):
        assert client.call("rpc.m.echo", n) == n
    for _ in range(2):
        with pytest.raises(RemoteError):
            client.call("rpc.m.fail", None)
    for n in range(4):
        client.publish("m.happened", n)
    for _ in range(4):
        assert handled.acquire(timeout=WAIT)

    # Then the registry counts each by topic and outcome, on the worker's side and the client's
    def value(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, labels) or 0.0

    svc = {"service": "svc"}
    assert value("tchu_rpc_handled_total", **svc, kind="call", topic="rpc.m.echo", outcome="ok") == 3
    assert value("tchu_rpc_handled_total", **svc, kind="call", topic="rpc.m.fail", outcome="ValueError") == 2
    events = {**svc, "kind": "event", "topic": "m.happened", "outcome": "ok"}
    _until(lambda: value("tchu_rpc_handled_total", **events) == 4, "4 events counted")
    assert value("tchu_rpc_handler_seconds_count", **svc, kind="call", topic="rpc.m.echo") == 3
    assert value("tchu_rpc_handlers_running", **svc, kind="call") == 0
    # (the client's `after_reply` runs on its callback thread, just after the caller got its answer)
    sent = {"kind": "event", "topic": "m.happened", "outcome": "ok"}
    _until(lambda: value("tchu_rpc_client_sent_total", **sent) == 4, "4 events confirmed")
    assert value("tchu_rpc_client_sent_total", kind="call", topic="rpc.m.echo", outcome="ok") == 3
    assert value("tchu_rpc_client_sent_total", kind="call", topic="rpc.m.fail", outcome="RemoteError") == 2
    assert value("tchu_rpc_client_call_seconds_count", topic="rpc.m.echo") == 3
    assert value("tchu_rpc_client_calls_in_flight") == 0
    worker.stop(5)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return {}
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.mark.timeout(120)
def test_a_worker_with_several_processes_serves_their_metrics(tchu: TchuFactory, tmp_path: Path) -> None:
    # Given `tchu-rpc worker --metrics-port` with two processes
    port, service = _free_port(), tchu.service("metrics")
    env = {
        **os.environ,
        "TCHU_RPC_CALLS_EXCHANGE": tchu.settings.calls_exchange,
        "TCHU_RPC_EVENTS_EXCHANGE": tchu.settings.events_exchange,
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    argv = ["worker", HANDLERS, "--queue", service, "--concurrency", "2", "--metrics-port", str(port)]
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tchu_rpc", *argv, "--broker", tchu.broker_url],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        client = tchu.client(call_timeout=WAIT)
        pids: list[int] = []
        # When calls succeed until both processes have answered, 5 fail and 10 events are published
        both = lambda: _answered_by(client, pids) and len(set(pids) - {0}) == 2  # noqa: E731
        _until(both, "both processes answer", within=60)
        for _ in range(5):
            with pytest.raises(RemoteError):
                client.call("rpc.metrics.fail", None)
        for n in range(10):
            client.publish("metrics.happened", n)

        # Then the metrics served count them all, by outcome, summed over the processes
        def handled(kind: str, topic: str, outcome: str) -> float:
            labels = (("kind", kind), ("outcome", outcome), ("service", service), ("topic", topic))
            return _scrape(url).get(("tchu_rpc_handled_total", labels), 0.0)

        _until(lambda: handled("event", "metrics.happened", "ok") == 10, "10 events counted", within=20)
        late = pids.count(0)  # calls that timed out while a process started: they may run later
        answered = len(pids) - late
        assert answered <= handled("call", "rpc.metrics.echo", "ok") <= answered + late
        assert handled("call", "rpc.metrics.fail", "ValueError") == 5
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def _answered_by(client: Any, pids: list[int]) -> bool:
    """Make one call; note which process answered it."""
    try:
        pids.append(client.call("rpc.metrics.echo", None, timeout=2))
        return True
    except NoRoute:  # not bound yet
        return False
    except CallTimeout:  # bound, not consuming yet
        pids.append(0)
        return False
