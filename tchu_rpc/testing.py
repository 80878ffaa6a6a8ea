"""Pytest plugin: a real broker for tests, isolated settings, and client and worker factories.

Loaded automatically when tchu_rpc is installed. The broker is, in this order: `--tchu-broker URL`,
`TCHU_RPC_TEST_BROKER_URL`, a RabbitMQ on 127.0.0.1:5672, a testcontainers RabbitMQ where Docker
works. With none of these the tests fail (never skip) and say how to start one.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from kombu import Connection

from tchu_rpc import topology
from tchu_rpc._worker import retries
from tchu_rpc.client import Client
from tchu_rpc.config import Settings
from tchu_rpc.log import capture_logs as capture_logs  # for tests that assert on logs
from tchu_rpc.middleware import Middleware
from tchu_rpc.registry import Registry
from tchu_rpc.reply_cache import ReplyCache
from tchu_rpc.worker import Worker

LOCAL_BROKER = "amqp://guest:guest@127.0.0.1:5672//"
HOW_TO_START = (
    "No RabbitMQ for the tests. Start one (`rabbitmq-server -detached`, or "
    "`docker run -d -p 5672:5672 rabbitmq:3`), or point TCHU_RPC_TEST_BROKER_URL at one."
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--tchu-broker", default=None, help="AMQP URL of the broker for tests")


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _container_url() -> tuple[str, Any]:
    try:
        from testcontainers.rabbitmq import RabbitMqContainer

        container = RabbitMqContainer("rabbitmq:3.13-alpine").start()
    except Exception as exc:
        pytest.fail(f"{HOW_TO_START} (testcontainers could not start one: {exc})", pytrace=False)
    host, port = container.get_container_host_ip(), container.get_exposed_port(5672)
    return f"amqp://guest:guest@{host}:{port}//", container


@pytest.fixture(scope="session")
def tchu_broker_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """Return the AMQP URL of a reachable broker for the whole test session."""
    url = request.config.getoption("--tchu-broker") or os.environ.get("TCHU_RPC_TEST_BROKER_URL")
    container = None
    if not url:
        if _answers("127.0.0.1", 5672):
            url = LOCAL_BROKER
        else:
            url, container = _container_url()
    try:
        with Connection(url, connect_timeout=5) as conn:
            conn.connect()
    except Exception as exc:
        pytest.fail(f"{HOW_TO_START} ({url.split('@')[-1]} refused: {exc})", pytrace=False)
    yield url
    if container is not None:
        container.stop()


class TchuFactory:
    """Make isolated settings, clients and running workers; remove what they declared afterwards."""

    def __init__(self, broker_url: str) -> None:
        self.broker_url = broker_url
        self.prefix = f"t{uuid.uuid4().hex[:10]}"
        # From the environment too, so that a run of the suite can turn a setting off for every test
        # (`TCHU_RPC_FAST_PATH=0`, see scripts/test); what is given here wins.
        self.settings = Settings.from_env(
            broker_url=broker_url,
            events_exchange=f"{self.prefix}.events",
            calls_exchange=f"{self.prefix}.calls",
            call_timeout=10.0,
            connect_timeout=5.0,
            shutdown_grace=10.0,
        )
        self._clients: list[Client] = []
        self._workers: list[Worker] = []
        self._services: set[str] = set()

    def service(self, name: str) -> str:
        """Return a queue name unique to this test."""
        full = f"{self.prefix}.{name}"
        self._services.add(full)
        return full

    def client(self, *, middleware: Sequence[Middleware] | None = None, **overrides: Any) -> Client:
        """Return a client on the test's exchanges; `overrides` are settings."""
        client = Client(settings=self.settings.replace(**overrides), middleware=middleware)
        self._clients.append(client)
        return client

    def worker(
        self,
        registry: Registry,
        name: str = "svc",
        *,
        reply_cache: ReplyCache | None = None,
        middleware: Sequence[Middleware] | None = None,
        **overrides: Any,
    ) -> Worker:
        """Return a started worker serving `registry` as the service `name`; `overrides` are settings."""
        worker = Worker(
            queue=self.service(name),
            registry=registry,
            settings=self.settings.replace(**overrides),
            reply_cache=reply_cache,
            middleware=middleware,
        )
        self._workers.append(worker)
        return worker.start()

    def cleanup(self) -> None:
        """Stop everything made here and delete the test's queues and exchanges."""
        for worker in self._workers:
            worker.stop(timeout=5)
        for client in self._clients:
            client.close()
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


@pytest.fixture
def tchu(tchu_broker_url: str) -> Iterator[TchuFactory]:
    """Yield a factory of isolated clients and workers on the test broker."""
    factory = TchuFactory(tchu_broker_url)
    yield factory
    factory.cleanup()
