"""A black-holed connection (packets silently dropped, socket open) is noticed by heartbeats, and a
client that must reconnect into a black hole still fails its calls and publishes by their timeout.

Only the client goes through the proxy; the worker talks to the broker directly, so the pending
call is still running in its handler when the client's link goes silent.
"""

from __future__ import annotations

import threading
import time
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor

import pytest
from fault_support import wait_for
from proxy import FaultProxy

from tchu_rpc import Client, ConnectionLost, Registry, TchuError
from tchu_rpc.testing import TchuFactory, capture_logs

HEARTBEAT = 1.0
CALL_TIMEOUT = 30.0
# py-amqp gives up after two silent heartbeat intervals; the client checks every heartbeat / 4.
NOTICED_WITHIN = 3 * HEARTBEAT + 0.5
#: The timeout of a call or publish made while the client reconnects into a black hole.
TIMEOUT = 2.0
#: A call or publish fails at most this long after its timeout (the client's deadline watchdog
#: looks 50 ms after each deadline), even while its I/O thread is blocked opening a connection.
LATE_BY_AT_MOST = 0.25


@pytest.mark.timeout(60)
@pytest.mark.parametrize("waiting", ["call_async", "call"])
def test_blackhole_fails_pending_call_with_connection_lost_within_heartbeats_then_reconnects(
    tchu: TchuFactory, fault_proxy: FaultProxy, fault_proxy_url: str, waiting: str
) -> None:
    running = threading.Event()
    release = threading.Event()
    registry = Registry()

    @registry.subscribe("rpc.blackhole.slow")
    def slow(data: None) -> str:
        running.set()
        release.wait(CALL_TIMEOUT)
        return "late"

    @registry.subscribe("rpc.blackhole.ping")
    def ping(data: None) -> str:
        return "pong"

    # Given a worker on the broker and a client with 1 s heartbeats through the proxy
    tchu.worker(registry, "blackhole")
    client = tchu.client(broker_url=fault_proxy_url, heartbeat=HEARTBEAT)
    assert client.call("rpc.blackhole.ping", None, timeout=5) == "pong"
    # And a call pending in a slow handler: a future, or a caller alone in flight, which reads the
    # connection itself (heartbeats included) while it waits
    pool = ThreadPoolExecutor(1)
    if waiting == "call_async":
        future = client.call_async("rpc.blackhole.slow", None, timeout=CALL_TIMEOUT)
    else:
        future = pool.submit(client.call, "rpc.blackhole.slow", None, timeout=CALL_TIMEOUT)
    try:
        assert running.wait(10), "the slow handler never started"

        # When the proxy black-holes the client's connection
        fault_proxy.blackhole()
        cut_at = time.monotonic()

        # Then the call fails with ConnectionLost (not CallTimeout) within 2-3 heartbeats
        with pytest.raises(ConnectionLost):
            future.result(timeout=CALL_TIMEOUT / 2)
        noticed = time.monotonic() - cut_at
        assert noticed <= NOTICED_WITHIN, f"noticed after {noticed:.2f} s"
    finally:
        release.set()
        pool.shutdown()

    # And once the network is back, the next call reconnects and succeeds
    fault_proxy.restore()
    assert client.call("rpc.blackhole.ping", None, timeout=10) == "pong"


@pytest.mark.timeout(30)
@pytest.mark.parametrize("waiting", ["call_async", "call", "publish"])
def test_a_client_reconnecting_into_a_black_hole_fails_with_connection_lost_by_its_timeout(
    tchu: TchuFactory, fault_proxy: FaultProxy, fault_proxy_url: str, waiting: str
) -> None:
    registry = Registry()

    @registry.subscribe("rpc.blackhole.ping")
    def ping(data: None) -> str:
        return "pong"

    @registry.subscribe("blackhole.happened")
    def happened(data: None) -> None:
        pass

    # Given a worker on the broker and a client through the proxy that made a call
    tchu.worker(registry, "blackhole")
    client = tchu.client(broker_url=fault_proxy_url)
    assert client.call("rpc.blackhole.ping", None, timeout=5) == "pong"
    # And a proxy that black-holes every connection, new ones too, and has cut the client's: its
    # next connection attempt hangs in the AMQP handshake for connect_timeout, past the timeout
    assert client.settings.connect_timeout > TIMEOUT + LATE_BY_AT_MOST
    with capture_logs() as logs:
        fault_proxy.blackhole()
        assert fault_proxy.reset_all() == 1
        wait_for(
            lambda: any(e["event"] == "connection_lost" and e["loop"] == "tchu-client" for e in logs),
            10,
            "the client to notice the cut",
        )

    # When a call or a publish with a 2 s timeout waits while the client reconnects
    started = time.monotonic()
    error = _failure(client, waiting, TIMEOUT)
    took = time.monotonic() - started

    # Then it fails with ConnectionLost (the broker was never reached: not CallTimeout), a
    # TchuError, at its timeout and no more than LATE_BY_AT_MOST after it
    assert isinstance(error, ConnectionLost) and isinstance(error, TchuError), f"{error!r} after {took:.2f} s"
    assert TIMEOUT <= took <= TIMEOUT + LATE_BY_AT_MOST, f"failed after {took:.2f} s: {error!r}"


def _failure(client: Client, waiting: str, timeout: float) -> BaseException | None:
    """Call or publish as `waiting` says; return what it raised (None: it did not fail in 5 timeouts)."""
    if waiting == "call_async":
        future = client.call_async("rpc.blackhole.ping", None, timeout=timeout)
        done, _ = futures.wait([future], timeout=5 * timeout)
        return future.exception() if done else None
    try:
        if waiting == "call":
            client.call("rpc.blackhole.ping", None, timeout=timeout)
        else:
            client.publish("blackhole.happened", None, timeout=timeout)
    except Exception as exc:
        return exc
    return None
