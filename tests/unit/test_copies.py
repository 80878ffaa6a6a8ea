"""What a copy of a delivery carries: tchu_rpc's and the application's headers, never routing ones."""

from __future__ import annotations

from decimal import Decimal
from types import SimpleNamespace
from typing import Any

from amqp.serialization import dumps

from tchu_rpc import wire
from tchu_rpc._worker import outgoing
from tchu_rpc._worker.messages import trusted_copy, user_of

ROUTING_AND_BROKER = {
    "CC": ["svc.events"],
    "BCC": "svc.calls",
    "cc": "other.calls",
    "x-death": [{"queue": "q"}],
    "x-delivery-count": 3,
    "x-delay": 1000,
    "x-first-death-queue": "q",
}


def _message(headers: dict[Any, Any], exchange: str = "tchu_events", **props: Any) -> Any:
    return SimpleNamespace(
        body=b"{}",
        content_type=wire.JSON,
        content_encoding="utf-8",
        headers=headers,
        properties={"message_id": "m1", "correlation_id": "c1", **props},
        delivery_info={"exchange": exchange, "routing_key": "user.created", "delivery_tag": 1},
    )


def test_a_copy_never_carries_cc_bcc_or_the_brokers_headers() -> None:
    app = {"traceparent": "00-abc-def-01", "task": "x", wire.HEADER_CONTEXT: '{"a": 1}'}
    send = outgoing.copy(_message({**ROUTING_AND_BROKER, **app}), "svc.dead", {}, "svc")
    assert send["headers"] == {**app, wire.HEADER_TOPIC: "user.created"}


def test_a_publishers_claims_are_dropped_and_its_checked_identity_kept() -> None:
    claims = {wire.HEADER_TOPIC: "rpc.admin.wipe", wire.HEADER_USER_ID: "admin", wire.HEADER_DELIVERIES: 0}
    send = outgoing.copy(_message(claims, user_id="alice"), "svc.dead", {}, "svc")
    assert send["headers"] == {wire.HEADER_TOPIC: "user.created", wire.HEADER_USER_ID: "alice"}
    # marked as the worker's: its app id, with its login as user id (RabbitMQ checks that one)
    assert (send["app_id"], send["user_id"]) == (wire.COPY_APP_ID, "svc")


def test_a_copy_of_a_copy_keeps_the_original_identity_and_topic() -> None:
    first = outgoing.copy(_message({}, user_id="alice"), "svc.events", {wire.HEADER_DELIVERIES: 1}, "svc")
    again = _message(first["headers"], exchange="", user_id=first["user_id"], app_id=first["app_id"])
    assert trusted_copy(again, "svc") is None
    assert user_of(again) == "alice"
    second = outgoing.copy(again, "svc.dead", {}, "svc")
    assert second["headers"][wire.HEADER_USER_ID] == "alice"
    assert second["headers"][wire.HEADER_TOPIC] == "user.created"
    assert second["headers"][wire.HEADER_DELIVERIES] == 1


def test_a_copy_by_another_login_or_unmarked_is_not_trusted() -> None:
    assert trusted_copy(_message({}, exchange="", user_id="eve", app_id=wire.COPY_APP_ID), "svc")
    assert trusted_copy(_message({}, exchange="", user_id="svc"), "svc")
    assert trusted_copy(_message({}, exchange="tchu_events", user_id="eve"), "svc") is None


def test_headers_py_amqp_cannot_encode_again_are_dropped_from_a_copy() -> None:
    # py-amqp decodes a decimal field as n / 10**scale, which can come back as Decimal("1E+2"): it
    # cannot encode that (a negative scale); bytes keys come from keys that are not UTF-8
    headers = {"price": Decimal("1E+2"), "big": Decimal(10**12), "fine": 1, b"\xff": "x"}
    send = outgoing.copy(_message(headers), "svc.dead", {}, "svc")
    assert send["headers"] == {"fine": 1, wire.HEADER_TOPIC: "user.created"}
    dumps("F", (send["headers"],))


def test_headers_rabbitmq_refuses_or_py_amqp_cannot_write_are_dropped_from_a_copy() -> None:
    # RabbitMQ closes the connection over a NaN or infinite float; py-amqp reads a table ~600 deep
    # (a stack frame a level) but writes it with two, and fails
    deep: dict[str, Any] = {"leaf": 1}
    for _ in range(600):
        deep = {"n": deep}
    headers = {"nan": float("nan"), "inf": [1.0, float("inf")], "deep": deep, "fine": 2.5}
    send = outgoing.copy(_message(headers), "svc.dead", {}, "svc")
    assert send["headers"] == {"fine": 2.5, wire.HEADER_TOPIC: "user.created"}
