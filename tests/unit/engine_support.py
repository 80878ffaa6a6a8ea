"""Fakes and fixtures shared by the engine's broker-free tests (tests/unit/test_engine_*.py)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

#: Every bounded wait of these tests; far beyond what any step takes, short of the per-test timeout.
WAIT = 5.0


class UpConnection:
    """Stands for a kombu `Connection` that is up: `Loop._check` reads only `connected`."""

    connected = True


class PairConnection:
    """Stands for a kombu connection over py-amqp whose socket is one end of a socket pair.

    The test holds the other end (`broker_end`): closing it is the broker going away. The object is
    its own py-amqp connection (`Loop._amqp`), whose `drain_events` reads the socket as py-amqp would.
    """

    def __init__(self) -> None:
        self.sock, self.broker_end = socket.socketpair()
        self.connected = True
        self.connection = self
        self.collected = False

    def drain_events(self, timeout: float | None = None) -> None:
        if not self.sock.recv(4096):
            raise OSError("Server unexpectedly closed connection")  # what py-amqp says

    def collect(self) -> None:  # kombu's release of a dead connection: no network
        self.collected = True
        self.connected = False
        self.sock.close()

    def release(self) -> None:
        self.connected = False
        self.sock.close()

    def close_all(self) -> None:
        self.sock.close()
        self.broker_end.close()


@pytest.fixture(autouse=True)
def no_thread_left_behind() -> Iterator[None]:
    """Fail a test that leaves one of its threads running (they are all named `t-...`)."""
    before = set(threading.enumerate())
    yield
    left = [t for t in threading.enumerate() if t not in before and t.name.startswith("t-")]
    for thread in left:
        thread.join(WAIT)
    assert [thread.name for thread in left if thread.is_alive()] == []
