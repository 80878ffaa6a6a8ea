"""Middleware sees every call and event once, in order; a raising middleware is reported, loses nothing."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from tchu_rpc import Delivery, Middleware, OutgoingMessage, Registry, RemoteError, current_delivery
from tchu_rpc.testing import TchuFactory, capture_logs

WAIT = 10.0


class Recording(Middleware):
    """Note every hook it sees, as (its name, hook, topic)."""

    def __init__(self, name: str, seen: list[tuple[str, str, str]], done: threading.Event | None = None):
        self.name, self.seen, self.done = name, seen, done

    def before_publish(self, message: OutgoingMessage) -> None:
        message.headers[f"by-{self.name}"] = True
        self.seen.append((self.name, "before_publish", message.topic))

    def after_reply(self, message: OutgoingMessage, outcome: Any) -> None:
        self.seen.append((self.name, "after_reply", message.topic))
        if self.done is not None and self.name == "b":
            self.done.set()

    def before_handler(self, delivery: Delivery) -> None:
        self.seen.append((self.name, "before_handler", delivery.topic))

    def after_handler(self, delivery: Delivery, result: Any) -> None:
        self.seen.append((self.name, "after_handler", delivery.topic))
        if self.done is not None and self.name == "x":
            self.done.set()

    def on_error(self, delivery: Delivery, error: BaseException) -> None:
        self.seen.append((self.name, "on_error", delivery.topic))


@pytest.mark.timeout(60)
def test_middleware_sees_each_call_once_in_the_order_given_on_both_sides(tchu: TchuFactory) -> None:
    # Given a worker and a client, each with two middleware
    worker_seen: list[tuple[str, str, str]] = []
    client_seen: list[tuple[str, str, str]] = []
    replied = threading.Event()
    registry = Registry()
    registry.subscribe("rpc.mw.echo")(lambda data: dict(current_delivery().caller_headers))  # type: ignore[union-attr]

    @registry.subscribe("rpc.mw.fail")
    def fail(data: Any) -> None:
        raise ValueError("no")

    tchu.worker(registry, middleware=[Recording("x", worker_seen), Recording("y", worker_seen)])
    client = tchu.client(middleware=[Recording("a", client_seen), Recording("b", client_seen, replied)])

    # When one call succeeds and one fails
    assert client.call("rpc.mw.echo", None, timeout=WAIT) == {"by-a": True, "by-b": True}
    assert replied.wait(WAIT)
    replied.clear()
    with pytest.raises(RemoteError):
        client.call("rpc.mw.fail", None, timeout=WAIT)
    assert replied.wait(WAIT)

    # Then each hook ran once per message, in the order the middleware was given
    assert client_seen == [
        ("a", "before_publish", "rpc.mw.echo"),
        ("b", "before_publish", "rpc.mw.echo"),
        ("a", "after_reply", "rpc.mw.echo"),
        ("b", "after_reply", "rpc.mw.echo"),
        ("a", "before_publish", "rpc.mw.fail"),
        ("b", "before_publish", "rpc.mw.fail"),
        ("a", "after_reply", "rpc.mw.fail"),
        ("b", "after_reply", "rpc.mw.fail"),
    ]
    assert worker_seen == [
        ("x", "before_handler", "rpc.mw.echo"),
        ("y", "before_handler", "rpc.mw.echo"),
        ("x", "after_handler", "rpc.mw.echo"),
        ("y", "after_handler", "rpc.mw.echo"),
        ("x", "before_handler", "rpc.mw.fail"),
        ("y", "before_handler", "rpc.mw.fail"),
        ("x", "on_error", "rpc.mw.fail"),
        ("y", "on_error", "rpc.mw.fail"),
    ]


class Refusing(Middleware):
    def before_handler(self, delivery: Delivery) -> None:
        if delivery.caller_headers.get("refuse"):
            raise PermissionError("not allowed")


class BrokenAfter(Middleware):
    def after_handler(self, delivery: Delivery, result: Any) -> None:
        raise RuntimeError("metrics backend down")


@pytest.mark.timeout(60)
def test_a_raising_middleware_is_reported_and_loses_no_message(tchu: TchuFactory) -> None:
    runs: list[Any] = []
    registry = Registry()
    registry.subscribe("rpc.mw.work")(lambda data: runs.append(data) or data)
    tchu.worker(registry, middleware=[Refusing(), BrokenAfter()])
    client = tchu.client()

    with capture_logs() as logs:
        # A before_handler that raises fails the call as a handler would, and the handler does not run
        with pytest.raises(RemoteError) as info:
            client.call("rpc.mw.work", 1, timeout=WAIT, headers={"refuse": True})
        # An after_handler that raises is logged; the result still reaches the caller
        assert client.call("rpc.mw.work", 2, timeout=WAIT) == 2

    assert (info.value.type, info.value.message) == ("PermissionError", "not allowed")
    assert runs == [2]
    failed = [(e["hook"], e["middleware"]) for e in logs if e["event"] == "middleware_failed"]
    assert failed == [("before_handler", "Refusing"), ("after_handler", "BrokenAfter")]


def test_a_before_publish_that_raises_sends_nothing(tchu: TchuFactory) -> None:
    class Veto(Middleware):
        def before_publish(self, message: OutgoingMessage) -> None:
            raise PermissionError("vetoed")

    runs: list[Any] = []
    registry = Registry()
    registry.subscribe("mw.happened")(runs.append)
    tchu.worker(registry)
    vetoing = tchu.client(middleware=[Veto()])
    with pytest.raises(PermissionError):
        vetoing.publish("mw.happened", 1)
    assert vetoing._inflight.items() == []


@pytest.mark.timeout(60)
def test_middleware_sees_each_event_once_on_both_sides(tchu: TchuFactory) -> None:
    # Given a worker and a client, each with one middleware, and an event handler
    worker_seen: list[tuple[str, str, str]] = []
    client_seen: list[tuple[str, str, str]] = []
    confirmed = threading.Event()
    handled = threading.Event()  # set by the worker's middleware once after_handler ran
    registry = Registry()
    registry.subscribe("mw.noted")(lambda data: None)
    tchu.worker(registry, middleware=[Recording("x", worker_seen, handled)])
    client = tchu.client(middleware=[Recording("b", client_seen, confirmed)])

    # When one event is published
    client.publish("mw.noted", 1)

    # Then the client's hooks saw it once (after_reply: its confirm), and the worker's once
    assert confirmed.wait(WAIT) and handled.wait(WAIT)
    assert client_seen == [("b", "before_publish", "mw.noted"), ("b", "after_reply", "mw.noted")]
    assert worker_seen == [("x", "before_handler", "mw.noted"), ("x", "after_handler", "mw.noted")]
