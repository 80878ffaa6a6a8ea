"""`TestBroker`: clients and running workers for tests, in-process (memory://) or on a real broker."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from kombu import Connection

from tchu_rpc import topology
from tchu_rpc._worker import retries
from tchu_rpc.client import Client
from tchu_rpc.config import Settings
from tchu_rpc.errors import ArgumentTypeError, ConfigError
from tchu_rpc.middleware import Middleware
from tchu_rpc.registry import Registry, default_registry
from tchu_rpc.reply_cache import ReplyCache
from tchu_rpc.testing.delays import DelayQueues
from tchu_rpc.worker import Worker

IN_PROCESS = "memory://"


class TestBroker:
    """Make isolated settings, clients and running workers; remove what they declared afterwards.

    By default everything runs in this process on kombu's `memory://` transport: no RabbitMQ. The
    same `Worker` and `Client` run as in production (calls, events, typed topics, remote errors,
    context, middleware, dead letters), and failed event handlers with a `Retry` run again, after
    `retry_delays` times their delay (0: at once). Give `broker_url` an AMQP URL and the same test
    runs on RabbitMQ (there retries wait as the broker makes them wait).

    Each broker names its exchanges and queues with a prefix of its own (`prefix`), so that tests
    never see each other's messages. Use it as a context manager, or call `close()`.

    Args:
        broker_url: `memory://` (the default) or an AMQP URL.
        settings: the settings to start from (default: `Settings.from_env()` with timeouts of 10 s
            at most); the broker URL and exchanges are set here; `overrides` of `client()` and
            `worker()` win.
        retry_delays: on memory://, the factor applied to each retry's wait (0 to 1).

    Raises:
        ConfigError: `retry_delays` is out of range (`ArgumentTypeError`: not a number).
    """

    __test__ = False  # not a test class for pytest, whatever its name

    def __init__(
        self, broker_url: str = IN_PROCESS, *, settings: Settings | None = None, retry_delays: float = 0.0
    ) -> None:
        self.broker_url = broker_url
        self.prefix = f"t{uuid.uuid4().hex[:10]}"
        # From the environment too, so that a run of the suite can turn a setting off for every test
        # (`TCHU_RPC_FAST_PATH=0`, see scripts/test), with timeouts short enough for tests.
        if settings is None:
            settings = Settings.from_env(call_timeout=10.0, connect_timeout=5.0, shutdown_grace=10.0)
        self.settings = settings.replace(
            broker_url=broker_url,
            events_exchange=f"{self.prefix}.events",
            calls_exchange=f"{self.prefix}.calls",
        )
        self._clients: list[Client] = []
        self._workers: list[Worker] = []
        self._services: set[str] = set()
        if isinstance(retry_delays, bool) or not isinstance(retry_delays, int | float):
            raise ArgumentTypeError(f"retry_delays must be a number, not {type(retry_delays).__name__}")
        if not 0 <= retry_delays <= 1:
            raise ConfigError(f"retry_delays must be from 0 to 1, not {retry_delays!r}")
        self._retry_delays = retry_delays
        self._delays: DelayQueues | None = None  # started by the first worker with retries, on memory://

    def service(self, name: str) -> str:
        """Return the queue name of the service `name` on this broker (prefixed, unique to it)."""
        full = f"{self.prefix}.{name}"
        self._services.add(full)
        return full

    def client(self, *, middleware: Sequence[Middleware] | None = None, **overrides: Any) -> Client:
        """Return a client on this broker; `overrides` are settings."""
        client = Client(settings=self.settings.replace(**overrides), middleware=middleware)
        self._clients.append(client)
        return client

    def worker(
        self,
        registry: Registry | None = None,
        name: str = "svc",
        *,
        reply_cache: ReplyCache | None = None,
        middleware: Sequence[Middleware] | None = None,
        **overrides: Any,
    ) -> Worker:
        """Return a started worker serving `registry` (default: `@subscribe`'s) as the service `name`.

        `overrides` are settings.
        """
        registry = default_registry if registry is None else registry
        worker = Worker(
            queue=self.service(name),
            registry=registry,
            settings=self.settings.replace(**overrides),
            reply_cache=reply_cache,
            middleware=middleware,
        )
        self._workers.append(worker)
        worker.start()
        if self.broker_url.startswith(IN_PROCESS) and retries.delays(registry.handlers):
            if self._delays is None:
                self._delays = DelayQueues(self.broker_url, self._retry_delays)
            self._delays.watch(worker.service, registry)
        return worker

    def close(self) -> None:
        """Stop everything made here and delete this broker's queues and exchanges; idempotent."""
        for worker in self._workers:
            worker.stop(timeout=5)
        for client in self._clients:
            client.close()
        if self._delays is not None:
            self._delays.close()
            self._delays = None
        with Connection(self.broker_url, connect_timeout=5) as conn:
            channel = conn.channel()
            for service in self._services:
                for suffix in ("calls", "events", "dead"):
                    channel.queue_delete(f"{service}.{suffix}")
            for worker in self._workers:  # the delay queues of event handlers' retries
                for delay in retries.delays(worker.registry.handlers):
                    channel.queue_delete(topology.retry_queue_name(worker.service, delay))
            for exchange in (self.settings.events_exchange, self.settings.calls_exchange):
                channel.exchange_delete(exchange)
        self._workers, self._clients, self._services = [], [], set()

    cleanup = close  # the name the `tchu` fixture of this project's suite has used

    def __enter__(self) -> TestBroker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
