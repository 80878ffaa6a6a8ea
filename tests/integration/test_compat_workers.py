"""`tchu_rpc.compat.TchuClient` against tchu_rpc workers: answered with the flag, refused by name without.

The compat client sends in tchu-tchu's format and asks for its answers by direct reply-to; a worker
started with `accept_tchu_tchu` answers there. A worker without it never hands Celery's task body
to a handler: it dead-letters the message with a reason naming the flag, and a caller learns the
flag from its error.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tchu_rpc import NoRoute, Registry, RemoteError
from tchu_rpc.compat import TchuClient, registering_on, subscribe
from tchu_rpc.dead import list_dead_letters
from tchu_rpc.testing import TchuFactory, capture_logs


class Seen:
    """What the handlers received, with a condition to wait on."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.changed = threading.Condition()

    def add(self, item: Any) -> None:
        with self.changed:
            self.items.append(item)
            self.changed.notify_all()

    def wait_for(self, count: int, within: float = 10.0) -> list[Any]:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.items) >= count, within), self.items
            return list(self.items)


@pytest.fixture
def service() -> Iterator[tuple[Registry, Seen]]:
    """A compat service: an event handler, an `rpc.` call handler and an exact topic (both kinds)."""
    seen = Seen()
    with registering_on(Registry()) as registry:

        @subscribe("user.created")
        def user_created(data: Any) -> None:
            seen.add(("event", data))

        @subscribe("rpc.users.get")
        def get_user(data: Any) -> Any:
            return {"id": data["id"], "name": "Ada"}

        @subscribe("order.calculate_total")
        def total(data: Any) -> Any:
            seen.add(("exact", data))
            return {"total": sum(data["items"])}

    yield registry, seen


#: `capture_logs` collects every level (the suite's set-up keeps only warnings on screen).
info_logs = capture_logs


def _wait_dead(tchu: TchuFactory, service: str, count: int, within: float = 10.0) -> list[Any]:
    deadline = time.monotonic() + within
    while True:
        letters = list_dead_letters(service, tchu.settings).letters
        if len(letters) >= count or time.monotonic() > deadline:
            assert len(letters) >= count, letters
            return list(letters)
        time.sleep(0.05)


def test_compat_client_calls_and_publishes_to_a_worker_that_accepts_tchu_tchu(
    tchu: TchuFactory, service: tuple[Registry, Seen]
) -> None:
    # Given a tchu_rpc worker started with accept_tchu_tchu, and a compat client (tchu-tchu's format)
    registry, seen = service
    worker = tchu.worker(registry, "users", accept_tchu_tchu=True)
    client = TchuClient(client=tchu.client(tchu_tchu_format=True))
    # When it calls and publishes, then every call is answered by direct reply-to
    assert [client.call("rpc.users.get", {"id": n}, timeout=10) for n in range(5)] == [
        {"id": n, "name": "Ada"} for n in range(5)
    ]
    assert client.call("order.calculate_total", {"items": [1, 2, 3]}, timeout=10) == {"total": 6}
    # and every event is handled once.
    for n in range(3):
        client.publish("user.created", {"id": n})
    assert sorted(d["id"] for k, d in seen.wait_for(4) if k == "event") == [0, 1, 2]
    assert list_dead_letters(worker.service, tchu.settings).letters == ()
    with seen.changed:
        assert len(seen.items) == 4  # the exact topic's handler ran once, as a call


def test_a_worker_without_the_flag_dead_letters_tchu_tchu_events_naming_the_flag(
    tchu: TchuFactory, service: tuple[Registry, Seen]
) -> None:
    # Given a worker without accept_tchu_tchu that subscribes user.created
    registry, seen = service
    with info_logs() as logs:
        worker = tchu.worker(registry, "users")
        client = TchuClient(client=tchu.client(tchu_tchu_format=True))
        # When a tchu-tchu event reaches its events queue
        client.publish("user.created", {"id": 7})
        letters = _wait_dead(tchu, worker.service, 1)
    # then no handler sees Celery's task body; the letter says which flag would have served it.
    assert seen.items == []
    assert letters[0].topic == "user.created"
    assert "TchuTchuNotAccepted" in letters[0].reason and "--accept-tchu-tchu" in letters[0].reason
    consuming = [e for e in logs if e["event"] == "worker_consuming"]
    assert consuming and consuming[0]["accept_tchu_tchu"] is False


def test_a_compat_call_to_a_worker_without_the_flag_fails_with_a_hint_naming_it(
    tchu: TchuFactory, service: tuple[Registry, Seen]
) -> None:
    # Given a worker without accept_tchu_tchu
    registry, seen = service
    tchu.worker(registry, "users")
    client = TchuClient(client=tchu.client(tchu_tchu_format=True))
    # When a compat client calls an rpc. topic (bound on the calls exchange only), then NoRoute names the flag
    with pytest.raises(NoRoute, match="--accept-tchu-tchu"):
        client.call("rpc.users.get", {"id": 1}, timeout=10)
    # and a call to an exact topic (bound as an event) is answered at once with an error naming it.
    started = time.monotonic()
    with pytest.raises(RemoteError, match="--accept-tchu-tchu") as raised:
        client.call("order.calculate_total", {"items": [1]}, timeout=10)
    assert raised.value.type == "TchuTchuNotAccepted"
    assert time.monotonic() - started < 5
    assert seen.items == []


def test_a_worker_with_the_flag_says_so_when_it_starts_consuming(
    tchu: TchuFactory, service: tuple[Registry, Seen]
) -> None:
    registry, _ = service
    with info_logs() as logs:
        tchu.worker(registry, "users", accept_tchu_tchu=True)
    consuming = [e for e in logs if e["event"] == "worker_consuming"]
    assert consuming and consuming[0]["accept_tchu_tchu"] is True
