"""tchu_rpc as a contender: workers started through its CLI, callers sharing one `tchu_rpc.Client`.

On an AMQP broker the servers are `python -m tchu_rpc worker benchmarks.tchu_rpc_handlers --queue Q
--concurrency N --broker URL` (one supervisor, N worker processes), on exchanges of their own passed
as `TCHU_RPC_CALLS_EXCHANGE` / `TCHU_RPC_EVENTS_EXCHANGE`. kombu's `memory://` exists only inside one
process, so there the workers are `Worker` objects in the harness's own process instead.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kombu import Connection

from benchmarks.loadgen import Call, RunResult, check_reply, request_body, run_threads
from benchmarks.procs import ServerGroup
from tchu_rpc import Client, Settings, Worker
from tchu_rpc.config import QueueType, Serializer

ROOT = Path(__file__).resolve().parent.parent
HANDLERS = "benchmarks.tchu_rpc_handlers"
CALL_TIMEOUT = 30.0
_READY_TIMEOUT = 60.0  # a worker may bind thousands of topics first


def in_process(broker_url: str) -> bool:
    """Tell whether `broker_url` is a per-process kombu transport (servers must run in-process)."""
    return broker_url.split("://", 1)[0] == "memory"


class TchuRpcContender:
    """tchu_rpc's `Client.call` against `tchu-rpc worker` processes (threads on memory://)."""

    name = "tchu_rpc"

    def __init__(self, run_id: str, log_dir: Path, queue_type: QueueType = "classic") -> None:
        self.queue_type: QueueType = queue_type
        self.service = f"bench.{run_id}.tchu_rpc"
        self.calls_exchange = f"bench.{run_id}.tchu_rpc.calls"
        self.events_exchange = f"bench.{run_id}.tchu_rpc.events"
        self._run_id, self._log_dir = run_id, log_dir
        self._servers = _Supervisors(log_dir / "tchu_rpc")
        self._workers: list[Worker] = []
        self._broker_url: str | None = None

    @property
    def settings(self) -> str:
        """Describe the setup in one line for the report."""
        return (
            "tchu_rpc via `python -m tchu_rpc worker --concurrency N` (memory://: N in-process workers); "
            f"durable {self.queue_type} queues; prefetch 1; reply and ack in one AMQP transaction; "
            "requests mandatory, non-persistent, confirmed; direct reply-to; one shared Client (one I/O "
            "thread) for all callers"
        )

    def settings_for(self, broker_url: str, serializer: Serializer = "json") -> Settings:
        """Return the settings of this run's clients and in-process workers."""
        return Settings(
            broker_url=broker_url,
            calls_exchange=self.calls_exchange,
            events_exchange=self.events_exchange,
            serializer=serializer,
            queue_type=self.queue_type,
            call_timeout=CALL_TIMEOUT,
            shutdown_grace=5.0,
        )

    def sibling(self, name: str) -> TchuRpcContender:
        """Return a contender of this run with a service, exchanges and logs of its own, named `name`."""
        return TchuRpcContender(f"{self._run_id}.{name}", self._log_dir / name, self.queue_type)

    def start_servers(
        self, broker_url: str, processes: int, *, handlers: str = HANDLERS, env: dict[str, str] | None = None
    ) -> None:
        """Start `processes` workers of `handlers` (a module), with `env` added, and return once all consume.

        On memory://, the workers serve the default registry that `benchmarks.tchu_rpc_handlers` fills.
        """
        self._broker_url = broker_url
        if in_process(broker_url):
            import benchmarks.tchu_rpc_handlers  # noqa: F401  (fills the default registry)

            settings = self.settings_for(broker_url)
            for _ in range(processes):
                self._workers.append(Worker(queue=self.service, settings=settings).start())
            return
        argv = [sys.executable, "-m", "tchu_rpc", "worker", handlers, "--queue", self.service]
        argv += ["--concurrency", str(processes), "--broker", broker_url]
        environ = {k: v for k, v in os.environ.items() if not k.startswith("TCHU_RPC_")}
        environ.update(
            TCHU_RPC_CALLS_EXCHANGE=self.calls_exchange,
            TCHU_RPC_EVENTS_EXCHANGE=self.events_exchange,
            TCHU_RPC_SHUTDOWN_GRACE="5",
            TCHU_RPC_QUEUE_TYPE=self.queue_type,
            **(env or {}),
        )
        try:
            self._servers.spawn(argv, env=environ, cwd=ROOT)
            self._wait_consuming(broker_url, processes)
        except BaseException:
            self.stop_servers()
            raise

    def stop_servers(self) -> None:
        """Stop the workers, then delete the run's queues and exchanges."""
        for worker in self._workers:
            worker.stop(timeout=5)
        self._workers = []
        self._servers.stop(grace=15)
        if self._broker_url is not None and not in_process(self._broker_url):
            self.delete_topology(self._broker_url)

    def run_calls(
        self,
        broker_url: str,
        n_calls: int,
        in_flight: int,
        pad: str,
        warmup: int,
        *,
        serializer: Serializer = "json",
        extra: dict[str, Any] | None = None,
    ) -> RunResult:
        """Make `n_calls` echo calls from `in_flight` threads sharing one client."""
        with self.client(broker_url, serializer) as client:

            def factory(index: int) -> tuple[Call, Callable[[], None]]:
                def call(n: int) -> None:
                    body = {**request_body(n, pad), **(extra or {})}
                    check_reply(client.call("rpc.bench.echo", body, timeout=CALL_TIMEOUT), n)

                return call, lambda: None

            return run_threads(factory, n_calls, in_flight, warmup)

    @contextmanager
    def client(self, broker_url: str, serializer: Serializer = "json") -> Iterator[Client]:
        """Yield a client on this run's exchanges; it is closed afterwards."""
        with Client(settings=self.settings_for(broker_url, serializer)) as client:
            yield client

    def _wait_consuming(self, broker_url: str, processes: int) -> None:
        # The CLI prints no ready line: the broker's consumer counts say when every process consumes.
        deadline = time.monotonic() + _READY_TIMEOUT
        with Connection(broker_url, connect_timeout=5) as conn:
            while True:
                self._servers.check_alive()
                counts = [_consumers(conn, f"{self.service}.{lane}") for lane in ("calls", "events")]
                if min(counts) >= processes:
                    return
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"tchu_rpc workers not consuming after {_READY_TIMEOUT:.0f} s: {counts}"
                    )
                time.sleep(0.05)

    def delete_topology(self, broker_url: str) -> None:
        """Delete the run's queues and exchanges."""
        with Connection(broker_url, connect_timeout=5) as conn:
            channel = conn.channel()
            for lane in ("calls", "events", "dead"):
                channel.queue_delete(f"{self.service}.{lane}")
            for exchange in (self.calls_exchange, self.events_exchange):
                channel.exchange_delete(exchange)


class _Supervisors(ServerGroup):
    def check_alive(self) -> None:
        """Raise if a supervisor has exited (readiness is seen from the broker, not a ready line)."""
        for index, proc in enumerate(self._procs):
            if proc.poll() is not None:
                raise RuntimeError(f"tchu-rpc worker exited with {proc.returncode}; {self._tail(index)}")


def _consumers(conn: Connection, queue: str) -> int:
    channel = conn.channel()
    try:
        return int(channel.queue_declare(queue=queue, passive=True).consumer_count)
    except conn.channel_errors:  # 404 until the first worker declared it; the channel is closed
        return 0
    finally:
        try:
            channel.close()
        except conn.connection_errors + conn.channel_errors:
            pass
