"""The reverse: a tchu_rpc client (`tchu_tchu_format`) publishes to and calls a Celery worker on tchu-tchu."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from tchu_rpc import Client, NoRoute, RemoteError
from tchu_rpc._client import legacy
from tchu_rpc._client.callbacks import CallFuture
from tchu_rpc._client.inflight import Pending
from tchu_rpc._client.legacy import HANDLER_ERROR
from tchu_rpc.testing import TchuFactory

_SCRIPT = Path(__file__).with_name("tchu_tchu_worker.py")
_READY_TIMEOUT = 30
_WAIT = 10

CeleryWorker = Callable[[], Path]


def _lines_of(stream: IO[str], into: queue.Queue[str]) -> None:
    for line in stream:
        into.put(line)


@pytest.fixture
def celery_worker(tchu: TchuFactory, tchu_tchu_python: Path, tmp_path: Path) -> Iterator[CeleryWorker]:
    """Return a function starting a Celery worker with tchu-tchu handlers; it returns the events file."""
    procs: list[tuple[subprocess.Popen[str], threading.Thread]] = []

    def start() -> Path:
        out = tmp_path / "events.jsonl"
        spec = {
            "broker": tchu.broker_url,
            "exchange": tchu.settings.events_exchange,
            "queue": f"{tchu.prefix}.celery",
            "prefix": tchu.prefix,
            "out": str(out),
        }
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
        proc = subprocess.Popen(
            [str(tchu_tchu_python), str(_SCRIPT), json.dumps(spec)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        lines: queue.Queue[str] = queue.Queue()
        reader = threading.Thread(target=_lines_of, args=(proc.stdout, lines), daemon=True)
        procs.append((proc, reader))
        reader.start()
        seen, deadline = [], time.monotonic() + _READY_TIMEOUT
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                break
            seen.append(line)
            if line.rstrip().endswith("READY"):  # Celery may log what the worker prints
                return out
        tail = "".join(seen[-30:])
        raise AssertionError(f"the Celery worker was not ready in {_READY_TIMEOUT} s; its output:\n{tail}")

    yield start
    for proc, reader in procs:
        proc.kill()  # the test's worker only: its queue auto-deletes with its consumer
        proc.wait(timeout=10)
        reader.join(timeout=10)  # EOF once the worker is gone
        if proc.stdout is not None:
            proc.stdout.close()


def _client(tchu: TchuFactory) -> Client:
    return tchu.client(tchu_tchu_format=True, call_timeout=_WAIT)


def _wait_for_lines(path: Path, count: int, timeout: float = _WAIT) -> list[Any]:
    deadline = time.monotonic() + timeout
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= count or time.monotonic() > deadline:
            return [json.loads(line) for line in lines]
        time.sleep(0.05)  # a file written by another process: nothing to wait on but the file


def test_client_publishes_events_that_a_celery_tchu_tchu_worker_handles_once(
    tchu: TchuFactory, celery_worker: CeleryWorker
) -> None:
    # Given a Celery worker running tchu-tchu handlers, and a client sending in tchu-tchu's format
    out = celery_worker()
    client = _client(tchu)
    # When the client publishes five events
    for n in range(5):
        client.publish(f"{tchu.prefix}.created", {"n": n})
    # Then the handler gets each once, without tchu-tchu's `_tchu_meta`
    assert len(_wait_for_lines(out, 5)) == 5
    handled = _wait_for_lines(out, 6, timeout=0.5)  # and no sixth (a duplicate) comes after them
    assert sorted(item["n"] for item in handled) == [0, 1, 2, 3, 4]


def test_client_calls_a_celery_tchu_tchu_worker_over_direct_reply_to(
    tchu: TchuFactory, celery_worker: CeleryWorker
) -> None:
    celery_worker()
    client = _client(tchu)
    # When the client calls three times
    results = [client.call(f"rpc.{tchu.prefix}.echo", {"n": n, "name": "ada"}) for n in range(3)]
    # Then each call gets its handler's result, through RabbitMQ's direct reply-to: the Celery worker's
    # rpc:// backend published it on its own connection, and no reply queue was declared
    assert results == [{"echoed": {"n": n, "name": "ada"}} for n in range(3)]
    assert client._reply_to == "amq.rabbitmq.reply-to"


def test_client_call_raises_remote_error_when_the_tchu_tchu_handler_fails(
    tchu: TchuFactory, celery_worker: CeleryWorker
) -> None:
    celery_worker()
    client = _client(tchu)
    with pytest.raises(RemoteError) as caught:
        client.call(f"rpc.{tchu.prefix}.fail", {"id": 7})
    assert (caught.value.type, caught.value.message) == (HANDLER_ERROR, "no user 7")
    assert caught.value.details == {"handler": "fail"}


def test_client_call_in_tchu_tchu_format_to_an_unbound_topic_raises_no_route(tchu: TchuFactory) -> None:
    # No Celery worker, no queue bound for the topic: the broker returns the task message at once
    with pytest.raises(NoRoute, match=r"rpc\.t\.nobody"):
        _client(tchu).call("rpc.t.nobody", {"id": 1}, timeout=5)


_CELERY_SEND_TASK = """
import json, sys
from celery import Celery
app = Celery("x", broker="memory://", backend="rpc://")
app.conf.task_serializer = "json"
task_id, payload, topic, ignore = json.loads(sys.argv[1])
m = app.amqp.as_task_v2(task_id, "tchu_tchu.dispatch_event", args=[payload], kwargs={"routing_key": topic},
                        ignore_result=ignore)
print(json.dumps({"headers": m.headers, "body": m.body}))
"""


@pytest.mark.parametrize("kind", ["call", "event"])
def test_task_message_has_the_headers_and_body_celery_send_task_makes(
    tchu_tchu_python: Path, kind: str
) -> None:
    # Given the task message tchu_rpc makes for a call and for an event
    body = legacy.task_body(kind, "users.created", b'{"id":7}', 1 << 20)
    pending = Pending(CallFuture(), kind, "users.created", body, deadline=0.0, retry=False)
    ours = legacy.properties(pending, "c0ffee", "amq.rabbitmq.reply-to", 1.0)
    # When Celery 5.7 (the test venv's) makes the same task message
    argv = json.dumps(["c0ffee", json.loads(body)[0][0], "users.created", kind == "event"])
    done = subprocess.run(
        [str(tchu_tchu_python), "-c", _CELERY_SEND_TASK, argv], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    celery = json.loads(done.stdout)
    # Then both carry the same headers (but the origin: host and process) and the same body
    del celery["headers"]["origin"], ours["headers"]["origin"]
    assert ours["headers"] == celery["headers"]
    assert json.loads(body) == celery["body"]
