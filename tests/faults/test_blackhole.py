"""A black-holed connection (packets silently dropped, socket open) is noticed by heartbeats.

Only the client goes through the proxy; the worker talks to the broker directly, so the pending
call is still running in its handler when the client's link goes silent.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from proxy import FaultProxy

from tchu_rpc import ConnectionLost, Registry
from tchu_rpc.testing import TchuFactory

HEARTBEAT = 1.0
CALL_TIMEOUT = 30.0
# py-amqp gives up after two silent heartbeat intervals; the client checks every heartbeat / 4.
NOTICED_WITHIN = 3 * HEARTBEAT + 0.5


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
