"""Fixtures for cluster tests: a private three-node RabbitMQ cluster, started once per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from nodes import Cluster, ClusterError

from tchu_rpc.testing import TchuFactory


@pytest.fixture(scope="session")
def rabbit_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Yield a started three-node cluster on loopback (bounded: `nodes.START_TIMEOUT`); stop it after."""
    cluster = Cluster(Path(tmp_path_factory.mktemp("cluster")))
    try:
        cluster.start()
    except ClusterError as exc:
        pytest.fail(f"the test cluster did not start: {exc}", pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def cluster_tchu(rabbit_cluster: Cluster) -> Iterator[TchuFactory]:
    """Yield a factory of isolated clients and workers given every node's URL (a failover list).

    At teardown, nodes a test stopped are started again first, so that the next test has all three.
    """
    factory = TchuFactory(rabbit_cluster.failover_url)
    try:
        yield factory
    finally:
        rabbit_cluster.restore()
        factory.cleanup()
