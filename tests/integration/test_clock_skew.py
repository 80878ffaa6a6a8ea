"""A worker whose clock is minutes off still answers calls: a call's deadline does not compare clocks.

Issue 11 (D): the worker compared the caller's wall-clock deadline with its own clock, so a worker
whose clock ran ahead dropped every call silently (its caller got CallTimeout).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection

import tchu_rpc
from tchu_rpc.testing import TchuFactory

SKEW = 600.0  # seconds: a worker's clock ten minutes ahead, or behind
READY_WITHIN = 30.0
STOP_WITHIN = 15.0

#: A worker whose `time.time` is shifted by argv[1] seconds, patched before tchu_rpc is imported.
WORKER_SCRIPT = """
import json, sys, time
shift, config = float(sys.argv[1]), json.loads(sys.argv[2])
real_time = time.time
time.time = lambda: real_time() + shift
import tchu_rpc
registry = tchu_rpc.Registry()
registry.add("rpc.skew.echo", lambda data: data)
settings = tchu_rpc.Settings(**config["settings"])
tchu_rpc.Worker(queue=config["queue"], registry=registry, settings=settings).run()
"""


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> None:
    """Poll `condition` (another process's state: nothing signals it here) until true, or fail."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.05)


def consumers_of(url: str, queue: str) -> int:
    """Return how many consumers `queue` has (0 while it does not exist yet)."""
    with Connection(url, connect_timeout=5) as conn:
        channel = conn.channel()
        try:
            return int(channel.queue_declare(queue, passive=True).consumer_count)
        except Exception:  # NOT_FOUND closes the channel: the worker has not declared it yet
            return 0


@pytest.fixture
def skewed_worker(tchu: TchuFactory, request: pytest.FixtureRequest) -> Iterator[subprocess.Popen[bytes]]:
    """Run a worker process serving `rpc.skew.echo` with its clock shifted by `request.param` seconds."""
    queue = tchu.service("skewed")
    settings = tchu.settings
    config = {
        "queue": queue,
        "settings": {
            "broker_url": settings.broker_url,
            "events_exchange": settings.events_exchange,
            "calls_exchange": settings.calls_exchange,
            "shutdown_grace": 5.0,
        },
    }
    env = dict(os.environ)
    package_root = str(Path(tchu_rpc.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    process = subprocess.Popen(
        [sys.executable, "-c", WORKER_SCRIPT, str(request.param), json.dumps(config)], env=env
    )
    try:
        wait_until(
            lambda: process.poll() is not None or consumers_of(tchu.broker_url, f"{queue}.calls"),
            READY_WITHIN,
            "the skewed worker to consume",
        )
        assert process.poll() is None, f"the skewed worker exited with {process.returncode}"
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_WITHIN)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_WITHIN)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("skewed_worker", [SKEW, -SKEW], ids=["ahead", "behind"], indirect=True)
def test_a_worker_with_a_skewed_clock_answers_calls(
    tchu: TchuFactory, skewed_worker: subprocess.Popen[bytes]
) -> None:
    # Given a worker process whose wall clock is ten minutes off the caller's
    client = tchu.client()

    # When the caller makes calls with a timeout of a few seconds
    answers = [client.call("rpc.skew.echo", {"n": n}, timeout=5) for n in range(3)]

    # Then each is answered (not dropped as expired, which the caller sees as CallTimeout)
    assert answers == [{"n": n} for n in range(3)]
    assert skewed_worker.poll() is None
