"""Fixtures for fault tests: a fault-injecting proxy to the broker and a private RabbitMQ node."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from fault_support import WorkerProcesses
from proxy import FaultProxy
from rabbit_node import RabbitNode

from tchu_rpc.testing import TchuFactory, capture_logs


@dataclass(frozen=True)
class BrokerTarget:
    """Where the test broker is and how to log in to it."""

    host: str
    port: int
    user: str
    password: str
    vhost: str


def parse_broker_url(url: str) -> BrokerTarget:
    """Split an AMQP URL into the parts a proxy in front of it needs."""
    parts = urlsplit(url)
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    return BrokerTarget(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 5672,
        user=unquote(parts.username or "guest"),
        password=unquote(parts.password or "guest"),
        vhost=unquote(path) or "/",
    )


@pytest.fixture
def fault_proxy(tchu_broker_url: str) -> Iterator[FaultProxy]:
    """Yield a running FaultProxy in front of the test broker (see `tchu_broker_url`)."""
    target = parse_broker_url(tchu_broker_url)
    with FaultProxy(target.host, target.port) as proxy:
        yield proxy


@pytest.fixture
def fault_proxy_url(fault_proxy: FaultProxy, tchu_broker_url: str) -> str:
    """Return an AMQP URL through `fault_proxy`, with the test broker's credentials and vhost."""
    target = parse_broker_url(tchu_broker_url)
    return fault_proxy.url(target.user, target.password, target.vhost)


@pytest.fixture(scope="module")
def rabbit_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitNode]:
    """Yield a started private RabbitMQ node for the module; stop it at teardown."""
    node = RabbitNode(Path(tmp_path_factory.mktemp("rabbit_node")))
    try:
        node.start()
        yield node
    finally:
        node.stop()


@pytest.fixture
def workers(tchu: TchuFactory, tmp_path: Path) -> Iterator[WorkerProcesses]:
    """Worker processes of the test's own (see `fault_support.WorkerProcesses`); closed afterwards."""
    processes = WorkerProcesses(tchu, tmp_path)
    yield processes
    processes.close()


@pytest.fixture
def wire_service(tchu: TchuFactory, request: pytest.FixtureRequest) -> Iterator[Any]:
    """Yield a `wire_service.WireService`, logs captured; parametrize it indirectly with `fast_path`."""
    from wire_service import WireService  # it imports this module: not at the top

    target = parse_broker_url(tchu.broker_url)
    with FaultProxy(target.host, target.port) as proxy, capture_logs() as logs:
        service = WireService(tchu, proxy, logs, fast_path=getattr(request, "param", True))
        yield service
        service.close()
