"""`TestBroker` in-process (memory://): what a service's tests rely on behaves as on RabbitMQ.

No broker: these tests pass with RabbitMQ stopped. The marked variant on the real broker is
tests/integration/test_test_broker_on_rabbitmq.py.
"""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

import msgspec
import pytest

from tchu_rpc import (
    Delivery,
    Middleware,
    OutgoingMessage,
    Registry,
    RemoteError,
    Retry,
    RpcError,
    Topic,
    context,
    current_delivery,
)
from tchu_rpc.errors import ArgumentTypeError, ConfigError
from tchu_rpc.testing import TestBroker

WAIT = 5.0


class GetUser(msgspec.Struct):
    id: int


class User(msgspec.Struct):
    id: int
    name: str


class NotFound(msgspec.Struct):
    id: int


get_user = Topic("rpc.users.get", request=GetUser, response=User, error=NotFound)


class Flaky(Exception):
    """Raised by a handler until its last allowed run."""


def _users() -> Registry:
    registry = Registry()

    @registry.subscribe(get_user)
    def fetch(req: GetUser) -> User:
        if req.id != 1:
            raise RpcError(f"no user {req.id}", code="not_found", details=NotFound(id=req.id))
        return User(id=1, name="Ada")

    return registry


def _flaky(runs: list[float], fail_times: int, retry: Retry) -> tuple[Registry, threading.Event]:
    registry, done = Registry(), threading.Event()

    @registry.subscribe("users.created", retry=retry)
    def welcome(data: Any) -> None:
        runs.append(time.monotonic())
        if len(runs) <= fail_times:
            raise Flaky(f"run {len(runs)}")
        done.set()

    return registry, done


def test_typed_call_returns_the_response_type(tchu_test_broker: TestBroker) -> None:
    tchu_test_broker.worker(_users(), "users")
    assert tchu_test_broker.client().call(get_user, GetUser(id=1)) == User(id=1, name="Ada")


def test_business_error_reaches_the_caller_with_typed_details(tchu_test_broker: TestBroker) -> None:
    tchu_test_broker.worker(_users(), "users")
    with pytest.raises(RemoteError) as raised:
        tchu_test_broker.client().call(get_user, GetUser(id=7))
    assert (raised.value.type, raised.value.code) == ("RpcError", "not_found")
    assert raised.value.details == NotFound(id=7)


def test_an_event_reaches_every_service_bound_to_it(tchu_test_broker: TestBroker) -> None:
    got = {"audit": threading.Event(), "mailer": threading.Event()}
    for name, pattern in (("audit", "users.*"), ("mailer", "users.created")):
        registry = Registry()
        registry.add(pattern, lambda data, name=name: got[name].set())
        tchu_test_broker.worker(registry, name)
    tchu_test_broker.client().publish("users.created", {"id": 3})
    assert all(event.wait(WAIT) for event in got.values())


def test_context_and_headers_reach_the_handler(tchu_test_broker: TestBroker) -> None:
    seen: list[Delivery | None] = []
    registry = Registry()
    registry.add("rpc.whoami", lambda data: seen.append(current_delivery()))
    tchu_test_broker.worker(registry, "who")
    with context(request_id="r-42"):
        tchu_test_broker.client().call("rpc.whoami", {}, headers={"tenant": "acme"})
    (delivery,) = seen
    assert delivery is not None
    assert dict(delivery.context) == {"request_id": "r-42"}
    assert dict(delivery.caller_headers) == {"tenant": "acme"}


def test_client_and_worker_middleware_run(tchu_test_broker: TestBroker) -> None:
    hooks: list[str] = []

    class Record(Middleware):
        def before_publish(self, message: OutgoingMessage) -> None:
            hooks.append(f"before_publish {message.topic}")

        def before_handler(self, delivery: Delivery) -> None:
            hooks.append(f"before_handler {delivery.topic}")

        def after_handler(self, delivery: Delivery, result: Any) -> None:
            hooks.append(f"after_handler {result}")

    tchu_test_broker.worker(_users(), "users", middleware=[Record()])
    tchu_test_broker.client(middleware=[Record()]).call(get_user, GetUser(id=1))
    assert hooks[:2] == ["before_publish rpc.users.get", "before_handler rpc.users.get"]
    assert hooks[2].startswith("after_handler User(")


def test_retries_run_at_once_by_default(tchu_test_broker: TestBroker) -> None:
    # Given a handler that fails twice, with a minute before each retry on RabbitMQ
    runs: list[float] = []
    registry, done = _flaky(runs, 2, Retry(attempts=3, first_delay=60, on=Flaky))
    tchu_test_broker.worker(registry, "mailer")
    # When an event reaches it
    tchu_test_broker.client().publish("users.created", {"id": 3})
    # Then its third run succeeds without the waits
    assert done.wait(WAIT), runs
    assert len(runs) == 3


def test_retries_wait_their_delays_times_the_factor() -> None:
    runs: list[float] = []
    registry, done = _flaky(runs, 2, Retry(attempts=3, first_delay=2.0, backoff=2.0, jitter=False, on=Flaky))
    with TestBroker(retry_delays=0.1) as broker:
        broker.worker(registry, "mailer")
        broker.client().publish("users.created", {"id": 3})
        assert done.wait(WAIT), runs
    waits = [later - earlier for earlier, later in itertools.pairwise(runs)]
    assert 0.2 <= waits[0] < 1.0, waits  # 2 s x 0.1
    assert 0.4 <= waits[1] < 1.5, waits  # 4 s x 0.1


def test_last_failed_run_is_dead_lettered(tchu_test_broker: TestBroker) -> None:
    reasons: list[str] = []
    dead = threading.Event()

    class Watch(Middleware):
        def on_dead_letter(self, delivery: Delivery | None, reason: str) -> None:
            reasons.append(reason)
            dead.set()

    runs: list[float] = []
    registry, _ = _flaky(runs, 10, Retry(attempts=2, first_delay=60, on=Flaky))
    tchu_test_broker.worker(registry, "mailer", middleware=[Watch()])
    tchu_test_broker.client().publish("users.created", {"id": 3})
    assert dead.wait(WAIT)
    assert len(runs) == 2
    assert "after 2 attempts" in reasons[0] and "Flaky: run 2" in reasons[0]


def test_two_brokers_do_not_see_each_others_messages() -> None:
    seen: list[str] = []
    last = threading.Event()
    with TestBroker() as first, TestBroker() as second:
        registry = Registry()
        registry.add("users.*", lambda data: seen.append(data["from"]))
        registry.add("users.deleted", lambda data: last.set())
        first.worker(registry, "audit", event_concurrency=1)  # in order: the last one comes last
        second.client().publish("users.created", {"from": "second"})
        first.client().publish("users.deleted", {"from": "first"})
        assert last.wait(WAIT)
    assert seen == ["first"]


@pytest.mark.parametrize("factor", [-0.5, 1.5, float("nan")])
def test_retry_delays_out_of_range_is_a_config_error(factor: float) -> None:
    with pytest.raises(ConfigError, match="retry_delays"):
        TestBroker(retry_delays=factor)


def test_retry_delays_of_the_wrong_type_is_an_argument_type_error() -> None:
    with pytest.raises(ArgumentTypeError, match="retry_delays"):
        TestBroker(retry_delays="skip")  # type: ignore[arg-type]
