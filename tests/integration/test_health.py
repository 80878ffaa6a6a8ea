"""Operating a service: `ping` a topic, a worker's liveness and readiness probes, `inspect` its queues."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tchu_rpc import CallTimeout, NoRoute, Registry, Worker, cli
from tchu_rpc.health import Probe, serve
from tchu_rpc.ping import ping
from tchu_rpc.testing import TchuFactory

WAIT = 10.0
HANDLERS = str(Path(__file__).with_name("process_handlers.py"))


def _until(check: Callable[[], bool], what: str, within: float = WAIT) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within} s: {what}")
        time.sleep(0.05)


@contextmanager
def stalled(worker: Worker) -> Iterator[None]:
    """Stall the worker's I/O thread: its per-turn hook blocks until the block ends."""
    release, entered = threading.Event(), threading.Event()
    tick = worker._loop._on_tick

    def blocking(now: float) -> float | None:
        entered.set()
        release.wait(60)
        return tick(now)

    worker._loop._on_tick = blocking
    try:
        assert entered.wait(5), "the I/O thread turns at least once a second"
        yield
    finally:
        worker._loop._on_tick = tick
        release.set()


def _status(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def env_of(tchu: TchuFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the CLI (Settings.from_env) at the test's broker and exchanges."""
    monkeypatch.setenv("TCHU_RPC_BROKER_URL", tchu.broker_url)
    monkeypatch.setenv("TCHU_RPC_CALLS_EXCHANGE", tchu.settings.calls_exchange)
    monkeypatch.setenv("TCHU_RPC_EVENTS_EXCHANGE", tchu.settings.events_exchange)
    monkeypatch.setattr(cli, "configure", lambda level="info", json=False: None)


def test_ping_is_answered_by_the_worker_without_running_the_handler(tchu: TchuFactory) -> None:
    # Given a worker whose call handler counts its runs
    runs: list[Any] = []
    registry = Registry()
    registry.subscribe("rpc.health.get")(lambda data: runs.append(data))
    worker = tchu.worker(registry)
    # When the topic is pinged
    pong = ping(tchu.client(), "rpc.health.get", timeout=WAIT)
    # Then the worker's process answered, and the handler did not run
    assert (pong.topic, pong.service, pong.pid) == ("rpc.health.get", worker.service, os.getpid())
    assert 0 < pong.ms < WAIT * 1000
    assert runs == []


def test_ping_of_an_unbound_topic_raises_no_route(tchu: TchuFactory) -> None:
    registry = Registry()
    registry.subscribe("rpc.health.other")(print)
    tchu.worker(registry)  # the exchanges exist; nothing is bound for the pinged topic
    with pytest.raises(NoRoute):
        ping(tchu.client(), "rpc.health.nobody", timeout=WAIT)


def test_ping_command_prints_the_round_trip_and_fails_clearly_when_nothing_is_bound(
    tchu: TchuFactory, env_of: None, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = Registry()
    registry.subscribe("rpc.health.cli")(print)
    worker = tchu.worker(registry)
    # When the CLI pings a served topic, then one nothing serves
    assert cli.main(["ping", "rpc.health.cli", "--timeout", "5"]) == 0
    served = capsys.readouterr().out
    assert cli.main(["ping", "rpc.health.none", "--timeout", "5"]) == 1
    unserved = capsys.readouterr().err
    # Then the first prints who answered and in how long; the second says nothing serves it
    assert served.startswith(f"rpc.health.cli: answered by {worker.service} on ")
    assert served.rstrip().endswith(" ms")
    assert "nothing is bound for 'rpc.health.none': no worker serves it" in unserved


def test_ping_times_out_when_the_worker_is_bound_but_stuck(tchu: TchuFactory) -> None:
    registry = Registry()
    registry.subscribe("rpc.health.stuck")(print)
    worker = tchu.worker(registry)
    with stalled(worker):
        with pytest.raises(CallTimeout):
            ping(tchu.client(), "rpc.health.stuck", timeout=1)


def test_a_worker_is_ready_once_it_consumes_and_not_live_while_its_io_thread_is_stuck(
    tchu: TchuFactory,
) -> None:
    # Given a worker not started yet, its probes served over HTTP (stuck after 1 s without a turn)
    registry = Registry()
    registry.subscribe("rpc.health.probe")(print)
    worker = Worker(queue=tchu.service("probe"), registry=registry, settings=tchu.settings)
    server = serve(0, lambda: worker.probe(stall_limit=1.0), host="127.0.0.1")
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        # Then it is live but not ready, until it consumes
        assert _status(f"{base}/livez")[0] == 200
        assert _status(f"{base}/readyz") == (503, {"live": True, "ready": False, "reason": "not consuming"})
        worker.start()
        assert _status(f"{base}/readyz")[0] == 200
        # When its I/O thread is stuck, it is neither live nor ready
        with stalled(worker):
            _until(lambda: _status(f"{base}/livez")[0] == 503, "not live while the I/O thread is stuck")
            code, body = _status(f"{base}/readyz")
            assert code == 503 and body["reason"].startswith("I/O thread stuck for ")
        # And once it turns again, both come back
        _until(lambda: _status(f"{base}/livez")[0] == 200, "live again")
        assert _status(f"{base}/readyz")[0] == 200
        assert _status(f"{base}/other")[0] == 404
    finally:
        server.shutdown()
        server.server_close()
        worker.stop(5)


def test_a_worker_is_not_ready_once_stopped(tchu: TchuFactory) -> None:
    registry = Registry()
    registry.subscribe("rpc.health.stop")(print)
    worker = tchu.worker(registry)
    assert worker.probe() == Probe(True, True)
    worker.stop(5)
    assert worker.probe().ready is False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.timeout(90)
def test_the_supervisor_serves_probes_for_all_its_processes(tchu: TchuFactory, tmp_path: Path) -> None:
    # Given `tchu-rpc worker --health-port` with two processes, logging JSON lines
    port, service = _free_port(), tchu.service("probes")
    env = {
        **os.environ,
        "TCHU_RPC_CALLS_EXCHANGE": tchu.settings.calls_exchange,
        "TCHU_RPC_EVENTS_EXCHANGE": tchu.settings.events_exchange,
    }
    argv = ["worker", HANDLERS, "--queue", service, "--concurrency", "2", "--health-port", str(port)]
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tchu_rpc", *argv, "--broker", tchu.broker_url, "--log-format", "json"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        # Then it is ready once both consume, and live
        _until(lambda: _reachable(f"{base}/readyz") == 200, "ready", within=60)
        assert _status(f"{base}/livez") == (200, {"live": True, "ready": True, "reason": ""})
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    # And its logs were JSON lines
    events = [json.loads(line)["event"] for line in log.read_text().splitlines() if line.startswith("{")]
    assert {"health_serving", "worker_process_started", "worker_consuming"} <= set(events), log.read_text()


def _reachable(url: str) -> int:
    try:
        return _status(url)[0]
    except OSError:  # not listening yet
        return 0
