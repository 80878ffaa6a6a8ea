"""`tchu-rpc worker` as a real process tree against the real broker: calls, kills, restarts, shutdown.

Each test starts `python -m tchu_rpc worker process_handlers.py --concurrency N` in its own session
(so teardown can SIGKILL the supervisor and its children as one process group), on the test's
isolated exchanges, passed through `TCHU_RPC_*` variables.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest
from kombu import Connection

from tchu_rpc import CallTimeout, Client, ConfigError, NoRoute, Registry, Worker
from tchu_rpc.process import EXIT_CONFIG
from tchu_rpc.testing import TchuFactory, capture_logs

HANDLERS = str(Path(__file__).with_name("process_handlers.py"))
READY_WITHIN = 30.0  # seconds for the supervisor and every child to answer
_POLL = 0.05  # pause between polls of a condition that has no event to wait on


@dataclass
class WorkerProcess:
    """A running `tchu-rpc worker` supervisor, its service name and its log file."""

    popen: subprocess.Popen[bytes]
    service: str
    log: Path
    children: set[int]  # pids that answered a ping when the worker became ready

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


class StartWorker(Protocol):
    def __call__(self, concurrency: int, **env: str) -> WorkerProcess: ...


def _env(tchu: TchuFactory, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TCHU_RPC_")}
    env.update(
        TCHU_RPC_EVENTS_EXCHANGE=tchu.settings.events_exchange,
        TCHU_RPC_CALLS_EXCHANGE=tchu.settings.calls_exchange,
        TCHU_RPC_SHUTDOWN_GRACE="10",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def _tchu_rpc(*args: str) -> list[str]:
    return [sys.executable, "-m", "tchu_rpc", *args]


@pytest.fixture
def start_worker(tchu: TchuFactory, tmp_path: Path) -> Iterator[StartWorker]:
    """Start supervisors as subprocesses, wait until every child answers; SIGKILL them all after."""
    started: list[subprocess.Popen[bytes]] = []

    def start(concurrency: int, **env: str) -> WorkerProcess:
        service = tchu.service("proc")
        log = tmp_path / f"worker-{len(started)}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                _tchu_rpc(
                    "worker",
                    HANDLERS,
                    "--queue",
                    service,
                    "--concurrency",
                    str(concurrency),
                    "--broker",
                    tchu.broker_url,
                ),
                env=_env(tchu, **env),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started.append(popen)
        worker = WorkerProcess(popen, service, log, set())
        with tchu.client() as client:
            worker.children = _wait_for_pids(client, worker, concurrency)
        return worker

    yield start
    for popen in started:
        try:
            os.killpg(popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # the whole group exited already
        popen.wait(10)


def _wait_for_pids(client: Client, worker: WorkerProcess, count: int) -> set[int]:
    """Ping until `count` distinct worker processes have answered; return their pids.

    Before the first child declares the queue a call raises NoRoute at once; after that, RabbitMQ
    gives each call to the next consumer in turn, so every child that consumes answers soon.
    """
    pids: set[int] = set()
    deadline = time.monotonic() + READY_WITHIN
    while len(pids) < count:
        if worker.popen.poll() is not None:
            raise AssertionError(f"worker exited with {worker.popen.returncode}:\n{worker.log_text()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"only {len(pids)} of {count} children answered:\n{worker.log_text()}")
        try:
            pids.add(client.call("rpc.proc.ping", None, timeout=2))
        except NoRoute:
            time.sleep(_POLL)  # no queue yet
        except CallTimeout:
            pass
    return pids


def _wait_for_file(path: Path, worker: WorkerProcess, within: float = 10.0) -> str:
    deadline = time.monotonic() + within
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} never appeared:\n{worker.log_text()}"
        time.sleep(_POLL)  # the file is written in another process; nothing to wait on
    return path.read_text()


def _parent_of(pid: int) -> int:
    # /proc/<pid>/stat: "pid (comm) state ppid ..."; comm may contain spaces, so split after ")".
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def test_1000_calls_in_a_row_are_each_answered_once_by_four_processes(
    tchu: TchuFactory, start_worker: StartWorker
) -> None:
    # Given a worker with four processes, every one of them consuming
    worker = start_worker(4)
    assert len(worker.children) == 4
    client = tchu.client()
    # When 1,000 calls are made one after the other
    with capture_logs() as logs:
        results = [client.call("rpc.proc.echo", {"n": n}, timeout=10) for n in range(1000)]
        # A duplicate reply would come before its worker's answer to a later call: ping each child.
        assert _wait_for_pids(client, worker, 4) == worker.children
    # Then each call got its own result, from one of the four, and no reply came twice
    assert [r["n"] for r in results] == list(range(1000))
    assert {r["pid"] for r in results} == worker.children
    assert all(_parent_of(pid) == worker.pid for pid in worker.children)
    assert not [e for e in logs if e["event"] == "reply_dropped"]


@pytest.mark.parametrize("topic", ["rpc.proc.slow", "rpc.proc.slow_async"])  # a plain and an async def
def test_call_survives_sigkill_of_the_child_running_it(
    tchu: TchuFactory, start_worker: StartWorker, tmp_path: Path, topic: str
) -> None:
    # Given two worker processes and a slow call running in one of them
    worker = start_worker(2)
    client = tchu.client()
    pidfile = tmp_path / "slow.pid"
    future = client.call_async(topic, {"n": 7, "pidfile": str(pidfile), "seconds": 60}, timeout=20)
    busy = int(_wait_for_file(pidfile, worker))
    assert busy in worker.children and _parent_of(busy) == worker.pid
    # When that child is killed outright
    started = time.monotonic()
    os.kill(busy, signal.SIGKILL)
    # Then the broker redelivers the request and another process answers it, well within the timeout
    result = future.result(timeout=20)
    assert result["n"] == 7
    assert result["pid"] != busy
    assert result["redelivered"] is True
    assert _parent_of(result["pid"]) == worker.pid
    assert time.monotonic() - started < 10
    # And the supervisor saw the child die and started a third one in its place
    (died,) = _wait_for_log(worker, "worker_process_died", f"pid={busy} ")
    assert "exitcode=-9" in died
    assert len(_wait_for_log(worker, "worker_process_started", count=3)) == 3


def test_sigterm_to_the_supervisor_lets_the_running_call_reply_then_exits_0(
    tchu: TchuFactory, start_worker: StartWorker, tmp_path: Path
) -> None:
    # Given a call running a two-second handler in a worker process
    worker = start_worker(2)
    client = tchu.client()
    pidfile = tmp_path / "slow.pid"
    future = client.call_async("rpc.proc.slow", {"n": 3, "pidfile": str(pidfile), "seconds": 2}, timeout=20)
    busy = int(_wait_for_file(pidfile, worker))
    # When the supervisor is asked to stop
    worker.popen.send_signal(signal.SIGTERM)
    # Then the running call still gets its reply, from the process that was running it
    assert future.result(timeout=20) == {"n": 3, "pid": busy, "redelivered": False}
    # And the supervisor stops its children and exits 0
    assert worker.popen.wait(20) == 0, worker.log_text()
    log = worker.log_text()
    assert "supervisor_stopped" in log
    assert "worker_process_killed" not in log
    assert "worker_process_died" not in log


def test_a_burst_of_signals_still_stops_the_supervisor_with_exit_0(start_worker: StartWorker) -> None:
    # A signal handler that takes a lock deadlocks when a second signal interrupts it (seen with
    # `timeout` resending SIGTERM): the supervisor then hangs for ever with a dead child.
    worker = start_worker(2)
    for signum in [signal.SIGTERM, signal.SIGINT] * 50:
        worker.popen.send_signal(signum)
    assert worker.popen.wait(30) == 0, worker.log_text()
    assert "supervisor_stopped" in worker.log_text()


def test_cli_call_prints_the_result_and_publish_delivers_the_event(
    tchu: TchuFactory, start_worker: StartWorker, tmp_path: Path
) -> None:
    worker = start_worker(1)
    env = _env(tchu)
    broker = ["--broker", tchu.broker_url]

    # `call` prints the JSON result and exits 0
    done = subprocess.run(
        _tchu_rpc("call", "rpc.proc.echo", '{"n": 42}', *broker), env=env, capture_output=True, timeout=30
    )
    assert done.returncode == 0, done.stderr.decode()
    assert json.loads(done.stdout) == {"n": 42, "pid": next(iter(worker.children))}

    # `call` to a topic no service is bound to exits 1 and says NoRoute
    done = subprocess.run(
        _tchu_rpc("call", "rpc.nobody.home", "{}", *broker), env=env, capture_output=True, timeout=30
    )
    assert done.returncode == 1
    assert "NoRoute" in done.stderr.decode()
    assert done.stdout == b""

    # `publish` exits 0 and the worker's event handler receives the event
    touched = tmp_path / "touched.txt"
    data = json.dumps({"path": str(touched), "text": "hello"})
    done = subprocess.run(
        _tchu_rpc("publish", "proc.touched", data, *broker), env=env, capture_output=True, timeout=30
    )
    assert done.returncode == 0, done.stderr.decode()
    assert _wait_for_file(touched, worker) == "hello"


def test_cli_demo_runs_on_memory_transport() -> None:
    done = subprocess.run(_tchu_rpc("demo"), capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    out = done.stdout.decode()
    assert "event user.created reached services 'users' and 'mailer': True" in out


def test_supervisor_restarts_a_child_killed_while_idle(tchu: TchuFactory, start_worker: StartWorker) -> None:
    # Given two idle worker processes
    worker = start_worker(2)
    victim = min(worker.children)
    assert _parent_of(victim) == worker.pid
    # When one of them is killed
    os.kill(victim, signal.SIGKILL)
    # Then the supervisor starts a new child, and calls are answered by the survivor and the new one
    client = tchu.client()
    deadline = time.monotonic() + READY_WITHIN
    pids: set[int] = set()
    while not pids - worker.children:
        assert time.monotonic() < deadline, f"no new child answered:\n{worker.log_text()}"
        pids.add(client.call("rpc.proc.ping", None, timeout=5))
    (newcomer,) = pids - worker.children
    assert victim not in pids
    assert _parent_of(newcomer) == worker.pid
    assert [client.call("rpc.proc.echo", {"n": n}, timeout=5)["n"] for n in range(20)] == list(range(20))
    (died,) = _wait_for_log(worker, "worker_process_died", f"pid={victim} ")
    assert "exitcode=-9" in died
    assert _wait_for_log(worker, "worker_process_started", f"pid={newcomer} ")


def _wait_for_log(worker: WorkerProcess, *words: str, count: int = 1, within: float = 10.0) -> list[str]:
    """Return the worker's log lines that contain all `words` once there are `count` of them."""
    deadline = time.monotonic() + within
    while True:
        lines = [line for line in worker.log_text().splitlines() if all(w in line for w in words)]
        if len(lines) >= count:
            return lines
        assert time.monotonic() < deadline, f"not {count} log lines with {words}:\n{worker.log_text()}"
        time.sleep(_POLL)  # the log is written by another process


@pytest.mark.timeout(120)
def test_a_worker_whose_queue_the_broker_refuses_gives_up_with_the_reason_and_a_non_zero_exit(
    tchu: TchuFactory, tmp_path: Path
) -> None:
    # Given a service whose call queue exists as a quorum queue, and workers that want it classic
    service = tchu.service("refused")
    with Connection(tchu.broker_url, connect_timeout=5) as conn:
        conn.channel().queue_declare(
            f"{service}.calls", durable=True, auto_delete=False, arguments={"x-queue-type": "quorum"}
        )

    # When the supervisor runs them
    log = tmp_path / "refused.log"
    with log.open("wb") as out:
        done = subprocess.run(
            _tchu_rpc(
                "worker", HANDLERS, "--queue", service, "--concurrency", "2", "--broker", tchu.broker_url
            ),
            env=_env(tchu),
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=90,
            check=False,
        )

    # Then it gives up by itself (no restart for ever) with EX_CONFIG, and says the broker's reason
    text = log.read_text(errors="replace")
    assert done.returncode == EXIT_CONFIG, text
    assert "supervisor_gave_up" in text and "inequivalent arg" in text, text
    assert text.count("worker_process_started") <= 4, text


@pytest.mark.timeout(60)
def test_an_embedded_worker_whose_queue_the_broker_refuses_raises_config_error_with_the_reason(
    tchu: TchuFactory,
) -> None:
    service = tchu.service("refused")
    with Connection(tchu.broker_url, connect_timeout=5) as conn:
        conn.channel().queue_declare(
            f"{service}.calls", durable=True, auto_delete=False, arguments={"x-queue-type": "quorum"}
        )
    registry = Registry()
    registry.subscribe("rpc.refused.ping")(lambda data: data)
    worker = Worker(queue=service, registry=registry, settings=tchu.settings)
    with pytest.raises(ConfigError, match="inequivalent arg"):
        worker.start()
    worker.stop(0)
