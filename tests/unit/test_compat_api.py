"""tchu_rpc.compat without a broker: tchu-tchu's names, shapes and the kinds its handlers get."""

from __future__ import annotations

import builtins
from typing import Any

import pytest

import tchu_rpc
from tchu_rpc import Registry, context
from tchu_rpc.compat import (
    TchuEvent,
    TchuRPCException,
    TimeoutError,
    create_topic_dispatcher,
    get_subscribed_routing_keys,
    registering_on,
    setup_celery_queue,
    subscribe,
)
from tchu_rpc.compat.subscriber import kinds_for


class _Strict:
    """A serializer that, like DRF's, refuses keywords it does not know."""

    def __init__(self, data: Any, context: Any = None) -> None:
        self.data, self.context, self.errors = data, context, {}

    def is_valid(self) -> bool:
        self.validated_data = {"n": int(self.data["n"]), **{k: v for k, v in self.data.items() if k != "n"}}
        return True


def test_rpc_exception_answers_tchu_tchus_dict_and_is_an_rpc_error():
    exc = TchuRPCException("User not found", code="USER_NOT_FOUND", details={"user_id": 1})
    assert isinstance(exc, tchu_rpc.RpcError)
    assert exc.to_response_dict() == {
        "success": False,
        "error_message": "User not found",
        "error_code": "USER_NOT_FOUND",
        "error_details": {"user_id": 1},
    }
    assert TchuRPCException("x").to_response_dict()["error_code"] == "RPC_ERROR"
    assert TchuRPCException("x").details == {}


def test_timeout_error_is_call_timeout_and_the_builtin():
    assert TimeoutError is tchu_rpc.CallTimeout
    assert issubclass(TimeoutError, builtins.TimeoutError)


@pytest.mark.parametrize(
    ("pattern", "kinds"),
    [
        ("rpc.users.get", ("call",)),
        ("rpc.users.*", ("call",)),
        ("order.calculate_total", ("event", "call")),
        ("user.*", ("event",)),
        ("user.#", ("event",)),
        ("#", ("event",)),
    ],
)
def test_subscribe_registers_the_kinds_its_pattern_can_receive(pattern, kinds):
    assert kinds_for(pattern) == kinds
    registry = Registry()
    with registering_on(registry):
        subscribe(pattern)(lambda data: data)
    assert tuple(h.kind for h in registry.handlers) == kinds
    assert registry.handlers[0].fn({"a": 1, "_tchu_meta": {"is_rpc": True}}) == {"a": 1}


def test_subscribe_kind_overrides_the_convention():
    registry = Registry()
    with registering_on(registry):
        subscribe("user.created", kind="event")(lambda data: None)
    assert [h.kind for h in registry.handlers] == ["event"]


def test_get_subscribed_routing_keys_excludes_as_the_broker_matches():
    with registering_on(Registry()):
        for pattern in ("rpc.a.b", "user.*", "user.created", "order.x.y"):
            subscribe(pattern)(lambda data: None)
        assert get_subscribed_routing_keys() == ["order.x.y", "rpc.a.b", "user.*", "user.created"]
        assert get_subscribed_routing_keys(exclude_patterns=["rpc.#", "user.*"]) == ["order.x.y"]


def test_celery_helpers_refuse_and_say_what_replaces_them():
    with pytest.raises(tchu_rpc.ConfigError, match="tchu-rpc worker"):
        create_topic_dispatcher(object())
    with pytest.raises(tchu_rpc.ConfigError, match=r"tchu-rpc worker a\.subscribers --queue q"):
        setup_celery_queue(object(), "q", ["a.subscribers"])


def test_event_takes_meta_and_validates_with_a_duck_typed_serializer():
    class Numbered(TchuEvent):
        class Meta:
            topic = "num.set"
            request_serializer_class = _Strict

    event = Numbered()
    # skip_authorization is not passed to a serializer that does not name it
    assert event.serialize_request({"n": "3"}, skip_authorization=True, skip_reason="test") == {"n": 3}
    assert event["n"] == 3 and "n" in event and event.get("x", 1) == 1
    assert not event.is_authorized()
    with pytest.raises(ValueError, match="Topic must be provided"):
        TchuEvent()


def test_received_event_answers_rpc_exception_and_gets_carried_user():
    seen: list[Any] = []

    def handler(event: TchuEvent) -> Any:
        seen.append((event.is_authorized(), event.request_context))
        raise TchuRPCException("no", code="NOPE")

    def helper(data: dict[str, Any]) -> Any:
        return {"user": data["user"]}

    subscriber = TchuEvent(topic="rpc.x.y", handler=handler, context_helper=helper)
    with registering_on(Registry()) as registry:
        subscriber.subscribe()
    fn = registry.handlers[0].fn
    with context(user={"id": 1}, company={"id": 2}, user_company={"id": 3}):
        answer = fn({"n": 1})
    assert answer["error_code"] == "NOPE" and answer["success"] is False
    assert seen == [(True, {"user": {"id": 1}})]
