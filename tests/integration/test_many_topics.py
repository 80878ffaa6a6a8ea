"""A worker with 10,000 event patterns starts within the default wait, then serves (issue 12, item 4).

Binding one pattern at a time waited for the broker after each (`exchange.declare` and `queue.bind`,
two round trips per pattern): with the broker on another host, that outlasted `start()`'s default
wait, which failed with a `ConnectionLost` although the bindings were being made. A link that adds
1 ms each way stands for that host here, so that the test does not hang on this machine's speed. No
speed is asserted (the benchmark's `topics` scenario measures it): only that such a worker starts
with the default wait and serves.
"""

from __future__ import annotations

import queue
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from tchu_rpc import Registry
from tchu_rpc.testing import TchuFactory

PATTERNS = 10_000
LINK_DELAY = 0.001  # seconds added each way: a broker a network hop away
_CHUNK = 65536


class SlowLink:
    """Forward TCP connections to the broker, every chunk `delay` seconds late each way."""

    def __init__(self, broker_url: str, delay: float) -> None:
        parts = urlsplit(broker_url)
        self._target = (parts.hostname or "127.0.0.1", parts.port or 5672)
        self._delay = delay
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._sockets: list[socket.socket] = [self._listener]
        port = self._listener.getsockname()[1]
        self.url = parts._replace(netloc=f"{parts.username}:{parts.password}@127.0.0.1:{port}").geturl()
        threading.Thread(target=self._accept, name="slow-link", daemon=True).start()

    def close(self) -> None:
        """Close the listener and every forwarded connection."""
        for sock in self._sockets:
            sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # closed
                return
            upstream = socket.create_connection(self._target)
            self._sockets += [client, upstream]
            self._forward(client, upstream)
            self._forward(upstream, client)

    def _forward(self, source: socket.socket, sink: socket.socket) -> None:
        # One thread reads, one writes what was read once it is due: the delay adds latency to each
        # chunk without limiting how many are on their way.
        late: queue.SimpleQueue[tuple[float, bytes]] = queue.SimpleQueue()

        def read() -> None:
            data = b"x"
            while data:
                try:
                    data = source.recv(_CHUNK)
                except OSError:
                    data = b""
                late.put((time.monotonic() + self._delay, data))

        def write() -> None:
            while True:
                due, data = late.get()
                time.sleep(max(0.0, due - time.monotonic()))  # the link's latency, not a wait for a state
                try:
                    if not data:
                        sink.shutdown(socket.SHUT_WR)
                        return
                    sink.sendall(data)
                except OSError:
                    return

        threading.Thread(target=read, name="slow-link-read", daemon=True).start()
        threading.Thread(target=write, name="slow-link-write", daemon=True).start()


@pytest.fixture
def slow_link(tchu_broker_url: str) -> Iterator[SlowLink]:
    """Yield a link to the test broker that adds `LINK_DELAY` each way (ask for it before `tchu`)."""
    link = SlowLink(tchu_broker_url, LINK_DELAY)
    yield link
    link.close()


def many_topics_registry(inbox: queue.SimpleQueue[Any]) -> Registry:
    """Return a registry with `PATTERNS` event patterns `many.t<i>.*` and one call, `rpc.many.echo`."""
    registry = Registry()
    for i in range(PATTERNS):
        registry.add(f"many.t{i}.*", inbox.put)
    registry.add("rpc.many.echo", lambda data: data)
    return registry


# Generous and bounded: a broker makes 10,000 new durable bindings in several seconds.
@pytest.mark.timeout(240)
def test_a_worker_with_ten_thousand_event_patterns_starts_with_the_default_wait_and_serves(
    slow_link: SlowLink, tchu: TchuFactory
) -> None:
    # Given a registry of 10,000 event patterns and a call, and a broker 1 ms away each way
    inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
    registry = many_topics_registry(inbox)

    # When a worker starts there with the default start wait (no timeout given)
    tchu.worker(registry, "many", broker_url=slow_link.url)

    # Then an event to one of its patterns reaches the handler
    client = tchu.client()
    client.publish("many.t9876.created", {"n": 1})
    assert inbox.get(timeout=30) == {"n": 1}

    # And a call works
    assert client.call("rpc.many.echo", {"x": 1}, timeout=30) == {"x": 1}
