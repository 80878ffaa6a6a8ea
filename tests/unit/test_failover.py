"""A `;`-separated failover list is tried in turn, one URL per connection attempt."""

from __future__ import annotations

import random
import socket
import threading

import pytest

from tchu_rpc import ConfigError, ConnectionLost, Settings
from tchu_rpc._amqp.connection import Hosts, open_connection
from tchu_rpc._amqp.loop import Loop
from tchu_rpc._dead.queue import DeadQueue

A = "amqp://u:secret@10.0.0.1:5672//"
B = "amqp://u:secret@10.0.0.2:5672//"
C = "amqp://u:p;w@10.0.0.3:5672/vhost"  # a `;` inside a password does not split the list


def test_round_robin_starts_at_the_first_url_and_goes_round() -> None:
    hosts = Hosts(f"{A};{B};{C}")

    assert hosts.current == A
    assert [hosts.take() for _ in range(7)] == [A, B, C, A, B, C, A]
    assert hosts.current == A


def test_the_attempt_after_a_working_one_goes_to_the_next_url() -> None:
    # Given B worked last
    hosts = Hosts(f"{A};{B};{C}")
    hosts.take()
    assert hosts.take() == B

    # When its connection is lost, the next attempt goes to another node
    assert hosts.take() == C


def test_a_single_url_is_always_the_one_tried() -> None:
    hosts = Hosts(A)

    assert [hosts.take() for _ in range(3)] == [A, A, A]


def test_shuffle_orders_the_list_once_then_goes_round() -> None:
    hosts = Hosts(f"{A};{B};{C}", "shuffle", rng=random.Random(3))
    order = list(hosts.urls)

    assert sorted(order) == sorted([A, B, C])
    assert [hosts.take() for _ in range(6)] == order + order


def test_shuffle_spreads_processes_over_the_nodes() -> None:
    firsts = {Hosts(f"{A};{B};{C}", "shuffle", rng=random.Random(seed)).take() for seed in range(30)}

    assert firsts == {A, B, C}


def test_failover_strategy_is_checked_and_read_from_the_environment() -> None:
    assert Settings().failover_strategy == "round-robin"
    assert Settings.from_env({"TCHU_RPC_FAILOVER_STRATEGY": "shuffle"}).failover_strategy == "shuffle"
    with pytest.raises(ConfigError, match="failover_strategy"):
        Settings(failover_strategy="random")  # type: ignore[arg-type]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.timeout(20)
def test_the_io_loop_tries_the_next_url_on_each_attempt_and_names_it_masked() -> None:
    # Given a loop on a failover list of two nodes that refuse connections
    ports = [_closed_port(), _closed_port()]
    urls = [f"amqp://guest:hunter2@127.0.0.1:{port}//" for port in ports]
    settings = Settings(
        broker_url=";".join(urls), connect_timeout=1.0, reconnect_delay=0.01, reconnect_delay_max=0.05
    )
    lost: list[str] = []
    three = threading.Event()

    def on_lost(exc: BaseException) -> None:
        lost.append(str(exc))
        if len(lost) >= 3:
            three.set()

    loop = Loop("t-failover", settings, on_connect=lambda conn: None, on_lost=on_lost)

    # When it has tried three times
    loop.start()
    try:
        assert three.wait(15), lost
    finally:
        loop.stop()

    # Then it went to the first node, the second, then the first again, each named without password
    tried = [next(port for port in ports if f":{port}/" in error) for error in lost[:3]]
    assert tried == [ports[0], ports[1], ports[0]]
    assert all(isinstance(error, str) and "hunter2" not in error and "***" in error for error in lost)


def test_a_one_off_connection_tries_the_first_url() -> None:
    port = _closed_port()
    settings = Settings(broker_url=f"amqp://guest:pw@127.0.0.1:{port}//;{A}", connect_timeout=1.0)

    with pytest.raises(ConnectionLost, match=f":{port}/"):
        open_connection(settings)


@pytest.mark.timeout(20)
def test_the_dead_letter_queue_tries_each_url_once_and_names_every_failure_masked() -> None:
    # Given a failover list of two nodes that refuse connections
    ports = [_closed_port(), _closed_port()]
    urls = ";".join(f"amqp://guest:hunter2@127.0.0.1:{port}//" for port in ports)
    settings = Settings(broker_url=urls, connect_timeout=1.0)

    # When the dead-letter queue is opened, Then it fails once both were tried, naming each
    with pytest.raises(ConnectionLost) as caught:
        DeadQueue("svc", settings)
    message = str(caught.value)
    assert all(f":{port}/" in message for port in ports), message
    assert "hunter2" not in message
