"""Pytest plugin: `TestBroker` fixtures, in-process or on a real broker.

Loaded automatically when tchu_rpc is installed (entry point `pytest11`); pytest alone imports it.

- `tchu_test_broker`: a `TestBroker` in this process (memory://), no RabbitMQ needed. A test marked
  `@pytest.mark.tchu_rabbitmq` gets one on the real broker of `tchu_broker_url` instead.
- `tchu`: a `TestBroker` on the real broker (this project's own suite).
- `tchu_broker_url`: the real broker, in this order: `--tchu-broker URL`, `TCHU_RPC_TEST_BROKER_URL`,
  a RabbitMQ on 127.0.0.1:5672, a testcontainers RabbitMQ where Docker works. With none of these the
  tests that need it fail (never skip) and say how to start one.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from kombu import Connection

from tchu_rpc.testing.broker import TestBroker

LOCAL_BROKER = "amqp://guest:guest@127.0.0.1:5672//"
HOW_TO_START = (
    "No RabbitMQ for the tests. Start one (`rabbitmq-server -detached`, or "
    "`docker run -d -p 5672:5672 rabbitmq:3`), or point TCHU_RPC_TEST_BROKER_URL at one."
)


#: Runs a test's `tchu_test_broker` on the real broker (`tchu_broker_url`) instead of memory://.
MARKER = "tchu_rabbitmq"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--tchu-broker", default=None, help="AMQP URL of the broker for tests")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{MARKER}: run tchu_test_broker on RabbitMQ, not in-process")


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


@pytest.fixture
def tchu(tchu_broker_url: str) -> Iterator[TestBroker]:
    """Yield a factory of isolated clients and workers on the real test broker."""
    with TestBroker(tchu_broker_url) as broker:
        yield broker


@pytest.fixture
def tchu_test_broker(request: pytest.FixtureRequest) -> Iterator[TestBroker]:
    """Yield a `TestBroker` in this process; on RabbitMQ for a test marked `tchu_rabbitmq`."""
    url = "memory://"
    if request.node.get_closest_marker(MARKER) is not None:
        url = request.getfixturevalue("tchu_broker_url")
    with TestBroker(url) as broker:
        yield broker
