"""Check the fault tools themselves with plain kombu: the proxy's faults and the private node."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import kombu
import pytest
from conftest import BrokerTarget, parse_broker_url
from kombu.exceptions import OperationalError
from proxy import FaultProxy
from rabbit_node import RabbitNode
from wire_frames import RawPublisher, content_header, swapped, table, take_all

HEARTBEAT = 2


def _wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


@contextmanager
def _connected(url: str, **options: object) -> Iterator[kombu.Connection]:
    """Open a kombu connection with one attempt only, and release it afterwards."""
    conn = kombu.Connection(url, connect_timeout=2, **options)
    try:
        conn.ensure_connection(max_retries=0)
        yield conn
    finally:
        conn.release()


def _round_trip(conn: kombu.Connection) -> bytes:
    """Publish to a fresh exclusive queue and get the message back."""
    queue = kombu.Queue(f"tchu-fault-tools-{uuid.uuid4().hex}", exclusive=True, auto_delete=True)
    body = uuid.uuid4().bytes
    channel = conn.channel()
    try:
        bound = queue(channel)
        bound.declare()
        producer = kombu.Producer(channel)
        producer.publish(body, routing_key=queue.name, serializer=None, content_type="x/raw")
        deadline = time.monotonic() + 5
        while (message := bound.get(no_ack=True)) is None:
            assert time.monotonic() < deadline, "message never arrived"
            time.sleep(0.02)
        assert message.body == body
        return bytes(message.body)
    finally:
        channel.close()


def _proxy_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("FaultProxy-")]


def test_connection_through_proxy_carries_messages(fault_proxy: FaultProxy, fault_proxy_url: str) -> None:
    with _connected(fault_proxy_url) as conn:
        _round_trip(conn)
        assert fault_proxy.connection_count == 1
    _wait_for(lambda: fault_proxy.connection_count == 0, 5, "the closed connection to go")


@pytest.mark.timeout(30)
def test_reset_all_makes_blocked_drain_events_raise_quickly(
    fault_proxy: FaultProxy, fault_proxy_url: str
) -> None:
    # Given a connection blocked in drain_events in another thread
    with _connected(fault_proxy_url) as conn:
        queue = kombu.Queue(f"tchu-fault-tools-{uuid.uuid4().hex}", exclusive=True)
        consumer = conn.Consumer([queue], callbacks=[lambda body, message: None])
        consumer.consume()
        failure: list[BaseException] = []
        draining = threading.Event()

        def drain() -> None:
            draining.set()
            try:
                conn.drain_events(timeout=20)
            except BaseException as exc:
                failure.append(exc)

        drainer = threading.Thread(target=drain, daemon=True)
        drainer.start()
        assert draining.wait(5)

        # When the proxy cuts every connection
        cut_at = time.monotonic()
        assert fault_proxy.reset_all() == 1
        drainer.join(5)

        # Then drain_events raises a connection error at once
        assert not drainer.is_alive(), "drain_events still blocked after reset_all"
        assert time.monotonic() - cut_at < 2
        assert len(failure) == 1
        assert isinstance(failure[0], conn.connection_errors), repr(failure[0])
    assert fault_proxy.connection_count == 0

    # And new connections still go through
    with _connected(fault_proxy_url) as conn:
        _round_trip(conn)


@pytest.mark.timeout(40)
def test_blackhole_fails_heartbeat_check_within_two_intervals(
    fault_proxy: FaultProxy, fault_proxy_url: str
) -> None:
    with _connected(fault_proxy_url, heartbeat=HEARTBEAT) as conn:
        _round_trip(conn)
        conn.heartbeat_check()

        # When the proxy stops forwarding
        fault_proxy.blackhole()
        started = time.monotonic()
        deadline = started + 4 * HEARTBEAT
        failure: BaseException | None = None
        while failure is None and time.monotonic() < deadline:
            try:
                conn.heartbeat_check()
                conn.drain_events(timeout=0.2)
            except TimeoutError:
                continue
            except conn.connection_errors as exc:
                failure = exc

        # Then the heartbeat check gives up after two silent intervals
        elapsed = time.monotonic() - started
        assert failure is not None, "heartbeat_check never failed through the black hole"
        assert "heartbeat" in str(failure).lower(), repr(failure)
        assert elapsed < 2 * HEARTBEAT + 1, elapsed
        assert fault_proxy.connection_count == 1  # the socket itself stays open

    # And new connections are black-holed as well, until restore
    with pytest.raises(OperationalError):
        with _connected(fault_proxy_url):
            pass
    fault_proxy.restore()
    with _connected(fault_proxy_url) as conn:
        _round_trip(conn)


def test_refuse_closes_new_connections_but_keeps_open_ones(
    fault_proxy: FaultProxy, fault_proxy_url: str
) -> None:
    with _connected(fault_proxy_url) as conn:
        fault_proxy.refuse(True)
        with pytest.raises(OperationalError):
            with _connected(fault_proxy_url):
                pass
        _round_trip(conn)
        fault_proxy.refuse(False)
        with _connected(fault_proxy_url) as second:
            _round_trip(second)


@pytest.mark.timeout(60)
def test_proxy_forwards_and_cuts_many_concurrent_connections(
    fault_proxy: FaultProxy, fault_proxy_url: str
) -> None:
    count = 40
    conns = [kombu.Connection(fault_proxy_url, connect_timeout=5) for _ in range(count)]
    try:
        with ThreadPoolExecutor(max_workers=count) as pool:
            list(pool.map(_round_trip, conns))
        assert fault_proxy.connection_count == count
        assert fault_proxy.reset_all() == count
        assert fault_proxy.connection_count == 0
    finally:
        for conn in conns:
            conn.release()


def test_proxy_stop_closes_connections_and_leaves_no_thread(
    fault_proxy: FaultProxy, fault_proxy_url: str
) -> None:
    assert len(_proxy_threads()) == 1
    with _connected(fault_proxy_url) as conn:
        started = time.monotonic()
        fault_proxy.stop()
        assert time.monotonic() - started < 2
        assert _proxy_threads() == []
        with pytest.raises(conn.connection_errors):
            conn.drain_events(timeout=2)
    fault_proxy.stop()  # safe twice


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_proxy_swaps_bytes_in_content_headers_from_the_broker_only(tchu_broker_url: str) -> None:
    # Given a proxy that swaps a placeholder header entry for a field type the broker refuses
    target = parse_broker_url(tchu_broker_url)
    entry, placeholder, hostile = swapped("x-swap-tools", "x-odd", b"Z")
    queue = f"tools.swap.{uuid.uuid4().hex}"
    with FaultProxy(target.host, target.port) as proxy:
        proxy.rewrite_headers({placeholder: hostile})
        via_proxy = BrokerTarget("127.0.0.1", proxy.port, target.user, target.password, target.vhost)
        # When a message with the placeholder passes through it to the broker, then back
        publisher = RawPublisher(via_proxy)
        try:
            publisher.channel.queue_declare(queue, auto_delete=False)
            header = content_header(2, {"message_id": "m"}, table([entry]))
            publisher.publish_many([("", queue, header, b"{}")])  # not swapped on the way in
            ((raw, body),) = take_all(via_proxy, queue)
        finally:
            publisher.channel.queue_delete(queue)
            publisher.close()
    # Then the broker took the placeholder and the client got the swapped entry, at the same length
    assert placeholder not in raw and hostile in raw and len(raw) == len(header) and body == b"{}"


def test_private_node_keeps_persistent_message_across_restart(rabbit_node: RabbitNode) -> None:
    assert rabbit_node.amqp_port != 5672
    assert not rabbit_node.nodename.startswith("rabbit@")
    queue = kombu.Queue(f"tchu-fault-tools-{uuid.uuid4().hex}", durable=True)

    # Given a persistent message confirmed into a durable queue
    with _connected(rabbit_node.url, transport_options={"confirm_publish": True}) as conn:
        conn.Producer().publish(
            b"survivor",
            routing_key=queue.name,
            declare=[queue],
            delivery_mode=2,
            serializer=None,
            content_type="x/raw",
        )

    # When the node restarts
    rabbit_node.restart()

    # Then the message is still there
    with _connected(rabbit_node.url) as conn:
        bound = queue(conn.default_channel)
        message = bound.get(no_ack=True)
        assert message is not None
        assert message.body == b"survivor"
        bound.delete()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_stopping_private_node_fails_open_and_new_connections(rabbit_node: RabbitNode) -> None:
    try:
        with _connected(rabbit_node.url) as conn:
            conn.default_channel  # noqa: B018 - open a channel before the node goes
            # When the node stops
            rabbit_node.stop()
            # Then the open connection fails and new ones are refused
            with pytest.raises(conn.connection_errors):
                conn.drain_events(timeout=5)
        with pytest.raises(OperationalError):
            with _connected(rabbit_node.url):
                pass
    finally:
        rabbit_node.start()
