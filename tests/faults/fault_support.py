"""Helpers shared by the fault tests: condition waits, `tchu-rpc worker` subprocesses, queue probes.

Worker processes run `python -m tchu_rpc worker fault_handlers.py` in a session of their own, so
that teardown can SIGKILL the supervisor and its children as one process group.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import amqp
from kombu import Connection

from tchu_rpc import CallTimeout, Client, ConnectionLost, NoRoute
from tchu_rpc.testing import TchuFactory

HANDLERS = str(Path(__file__).with_name("fault_handlers.py"))
READY_WITHIN = 30.0  # seconds for a supervisor and every child to answer a ping
POLL = 0.02  # pause between polls of a condition nothing signals (another process, the broker)


def wait_for(condition: Callable[[], Any], timeout: float, what: str, poll: float = POLL) -> Any:
    """Poll `condition` until it returns something truthy; return that, or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(poll)


def children_of(pid: int) -> set[int]:
    """Return the pids of the worker processes a supervisor spawned (not multiprocessing helpers)."""
    try:
        listed = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return set()
    children = set()
    for child in map(int, listed):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue  # exited meanwhile
        # multiprocessing's spawn children run `spawn_main`; its resource tracker does not.
        if b"spawn_main" in cmdline:
            children.add(child)
    return children


def parent_of(pid: int) -> int:
    """Return the parent pid of `pid` from /proc (the command may contain spaces: split after ')')."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def queue_depth(url: str, queue: str) -> int:
    """Return the number of ready messages in `queue` (passive declare; the queue must exist)."""
    with Connection(url, connect_timeout=5) as conn:
        channel = conn.channel()
        try:
            return int(channel.queue_declare(queue, passive=True).message_count)
        finally:
            channel.close()


def get_all(url: str, queue: str, limit: int = 100_000) -> list[amqp.Message]:
    """Take every message now in `queue` (acked), in order."""
    messages = []
    with Connection(url, connect_timeout=5) as conn:
        channel = conn.channel()
        try:
            while len(messages) < limit and (message := channel.basic_get(queue, no_ack=True)) is not None:
                messages.append(message)
        finally:
            channel.close()
    return messages


@dataclass
class WorkerProcess:
    """A `tchu-rpc worker` supervisor, the service it serves and its log file."""

    popen: subprocess.Popen[bytes]
    service: str
    log: Path
    ready: set[int] = field(default_factory=set)  # children that answered a ping when it started

    @property
    def pid(self) -> int:
        return self.popen.pid

    def children(self) -> set[int]:
        return children_of(self.pid)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


class WorkerProcesses:
    """Start `tchu-rpc worker` supervisors on a test's exchanges; SIGKILL their groups at `close()`."""

    def __init__(self, tchu: TchuFactory, tmp_path: Path) -> None:
        self.tchu = tchu
        self.tmp_path = tmp_path
        self.started: list[WorkerProcess] = []

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TCHU_RPC_")}
        env.update(
            TCHU_RPC_EVENTS_EXCHANGE=self.tchu.settings.events_exchange,
            TCHU_RPC_CALLS_EXCHANGE=self.tchu.settings.calls_exchange,
            TCHU_RPC_SHUTDOWN_GRACE="10",
            PYTHONUNBUFFERED="1",
        )
        env.update(extra)
        return env

    def start(self, service: str, concurrency: int, *, wait: bool = True, **env: str) -> WorkerProcess:
        """Start a supervisor for `service`; with `wait`, return once each of its children answered."""
        log = self.tmp_path / f"worker-{len(self.started)}.log"
        args = ["worker", HANDLERS, "--queue", service, "--concurrency", str(concurrency)]
        with log.open("wb") as out:
            popen = subprocess.Popen(
                [sys.executable, "-m", "tchu_rpc", *args, "--broker", self.tchu.broker_url],
                env=self.env(**env),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        worker = WorkerProcess(popen, service, log)
        self.started.append(worker)
        if wait:
            with self.tchu.client() as client:
                worker.ready = wait_until_answering(client, worker, concurrency)
        return worker

    def close(self) -> None:
        for worker in self.started:
            try:
                os.killpg(worker.pid, signal.SIGKILL)  # a stopped (SIGSTOP) process dies too
            except ProcessLookupError:
                pass  # the whole group exited already
            worker.popen.wait(10)


def wait_until_answering(client: Client, worker: WorkerProcess, count: int) -> set[int]:
    """Ping until `count` distinct children of `worker` answered; return their pids.

    Before a child declared the queue a call raises NoRoute at once; after that the broker hands
    calls to the consumers in turn, so every consuming child answers soon. Pings answered by
    other supervisors' children on the same service are ignored.
    """
    pids: set[int] = set()
    deadline = time.monotonic() + READY_WITHIN
    while len(pids) < count:
        if worker.popen.poll() is not None:
            raise AssertionError(f"worker exited with {worker.popen.returncode}:\n{worker.log_text()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"only {len(pids)} of {count} children answered:\n{worker.log_text()}")
        try:
            pid = client.call("rpc.faults.ping", None, timeout=2)
        except NoRoute:
            time.sleep(0.05)  # no queue yet
            continue
        except (CallTimeout, ConnectionLost):
            continue
        if pid in worker.children():
            pids.add(pid)
    return pids


def run_lines(path: Path) -> list[tuple[int, bool, int]]:
    """Parse a `runs` file written by fault_handlers: (n, redelivered, pid) per handler run."""
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [(int(n), r == "1", int(pid)) for n, r, pid in (line.split() for line in lines)]


def is_quorum(url: str, queue: str) -> bool:
    """Tell whether `queue` is a quorum queue: re-declaring it as one is refused (406) otherwise."""
    with Connection(url, connect_timeout=5) as conn:
        channel = conn.channel()
        try:
            channel.queue_declare(
                queue, durable=True, auto_delete=False, arguments={"x-queue-type": "quorum"}
            )
        except amqp.exceptions.PreconditionFailed:
            return False
        channel.close()
        return True
