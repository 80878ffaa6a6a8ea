"""Opening a connection is bounded in time, whichever step hangs."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tchu_rpc import ConnectionLost, Settings
from tchu_rpc._amqp.connection import connect_time, open_connection


@pytest.fixture
def hanging_lookup(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Make every name lookup hang until the test ends (a resolver that never answers)."""
    release = threading.Event()
    real = socket.getaddrinfo

    def hang(*args: Any, **kwargs: Any) -> Any:
        release.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", hang)
    yield release
    release.set()


@pytest.mark.timeout(10)
def test_a_name_lookup_that_hangs_fails_the_connection_within_its_bound(
    hanging_lookup: threading.Event,
) -> None:
    # Given settings whose broker host name never resolves
    settings = Settings(broker_url="amqp://guest:guest@broker.invalid:5672//", connect_timeout=0.2)

    # When a connection is opened
    started = time.monotonic()
    with pytest.raises(ConnectionLost, match="no connection within") as info:
        open_connection(settings)

    # Then it fails once its bound has passed, not before, and says why without the password
    took = time.monotonic() - started
    assert connect_time(settings) <= took < connect_time(settings) + 1.0
    assert "guest:guest" not in str(info.value)
