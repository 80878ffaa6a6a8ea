"""Queue take-over: a tchu_rpc worker on `legacy_queue` finishes what a stopped Celery worker left."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection

from tchu_rpc import Registry
from tchu_rpc.testing import TchuFactory

_EVENTS = 1000
_STARTED = 30.0  # a Celery worker's start (imports, connection, declarations)
_STOPPED = 20.0  # its warm shutdown
_DRAINED = 30.0
_TOPIC = "orders.created"


def _queue_state(url: str, name: str) -> tuple[int, int] | None:
    """Return (messages ready, consumers) of queue `name`, or None when it does not exist."""
    with Connection(url, connect_timeout=5) as conn:
        try:
            _, messages, consumers = conn.channel().queue_declare(queue=name, passive=True)
        except Exception:  # 404: not declared yet
            return None
    return messages, consumers


def _wait(what: str, condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def _lines(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


@pytest.fixture
def legacy_queue(tchu: TchuFactory) -> Iterator[str]:
    """Return the name of a tchu-tchu service queue for this test; delete it afterwards."""
    name = f"{tchu.prefix}.tchu_queue"
    yield name
    with Connection(tchu.broker_url, connect_timeout=5) as conn:
        conn.channel().queue_delete(name)


@pytest.fixture
def celery_worker(
    tchu: TchuFactory, tchu_tchu_python: Path, legacy_queue: str, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """Start a real Celery worker of a tchu-tchu service on `legacy_queue`; return it and its record."""
    out = tmp_path / "celery.txt"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    env.update(
        TAKEOVER_BROKER=tchu.broker_url,
        TAKEOVER_QUEUE=legacy_queue,
        TAKEOVER_EXCHANGE=tchu.settings.events_exchange,
        TAKEOVER_TOPIC=_TOPIC,
        TAKEOVER_OUT=str(out),
    )
    argv = [str(tchu_tchu_python), "-m", "celery", "-A", "tchu_tchu_celery_app", "worker", "--pool", "solo"]
    argv += [
        "-n",
        f"{tchu.prefix}@%h",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "-l",
        "warning",
    ]
    log = open(tmp_path / "celery.log", "wb")  # closed when the worker has exited
    proc = subprocess.Popen(
        argv,
        cwd=Path(__file__).parent,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        yield proc, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()


@pytest.mark.parametrize("tchu_tchu_python", ["2"], indirect=True)
def test_worker_takes_over_a_celery_workers_queue_without_losing_or_repeating_events(
    tchu: TchuFactory,
    run_tchu_tchu: Callable[..., Any],
    celery_worker: tuple[subprocess.Popen[bytes], Path],
    legacy_queue: str,
    tmp_path: Path,
) -> None:
    celery, celery_out = celery_worker
    url = tchu.broker_url
    # Given a Celery worker of a tchu-tchu service serving its queue (declared by `setup_celery_queue`)
    started = time.monotonic()
    _wait(
        "the Celery worker to consume", lambda: (_queue_state(url, legacy_queue) or (0, 0))[1] >= 1, _STARTED
    )
    # When a real TchuClient publishes 1,000 events, and the Celery worker is stopped after some
    ops = [["publish", _TOPIC, {"n": n}] for n in range(_EVENTS)]
    results = run_tchu_tchu(url, tchu.settings.events_exchange, tchu.prefix, ops)
    assert all("ok" in r for r in results), [r for r in results if "ok" not in r][:3]
    _wait("the Celery worker to handle some", lambda: len(_lines(celery_out)) >= 20, _DRAINED)
    celery.send_signal(signal.SIGTERM)  # warm shutdown: it finishes the task it runs
    assert celery.wait(_STOPPED) == 0, (tmp_path / "celery.log").read_text()[-2000:]
    by_celery = _lines(celery_out)
    left, _ = _queue_state(url, legacy_queue) or (0, 0)
    assert 0 < left, "the Celery worker handled every event before it stopped: nothing was taken over"
    # And a tchu_rpc worker is started on the same queue
    seen: list[int] = []
    lock = threading.Lock()
    registry = Registry()

    @registry.subscribe(_TOPIC, kind="event")
    def record(data: dict[str, Any]) -> None:
        with lock:
            seen.append(data["n"])

    switched = time.monotonic()
    worker = tchu.worker(registry, name="orders", legacy_queue=legacy_queue)
    _wait("the take-over to drain the queue", lambda: len(seen) >= _EVENTS - len(by_celery), _DRAINED)
    worker.stop(timeout=5)
    # Then every event was handled exactly once, by one worker or the other, and nothing was dead-lettered
    both = Counter(by_celery) + Counter(seen)
    assert sorted(both) == list(range(_EVENTS)), f"lost: {sorted(set(range(_EVENTS)) - set(both))[:20]}"
    assert [n for n, count in both.items() if count > 1] == []
    assert _queue_state(url, legacy_queue) == (0, 0)
    assert _queue_state(url, worker.service + ".dead") == (0, 0)
    print(
        f"celery handled {len(by_celery)}, tchu_rpc {len(seen)} ({left} left at the switch); "
        f"take-over drained in {time.monotonic() - switched:.2f} s, "
        f"test body {time.monotonic() - started:.2f} s"
    )
