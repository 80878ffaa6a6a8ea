"""Which tchu-tchu calls a worker answers, and how one without `accept_tchu_tchu` refuses them (no broker)."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest

from tchu_rpc import Registry, Settings
from tchu_rpc._worker import legacy, unaccepted
from tchu_rpc._worker.dispatch import Dispatcher

_DIRECT = "amq.rabbitmq.reply-to.g1h2AA5yZXBseUAxMjM0NTY3OAAAAAAAAAAB.abcDEF=="
_TASK_ID = "9b0e1c2d-aaaa-4bbb-8ccc-111122223333"


def _message(body: Any, headers: dict[str, Any] | None = None, reply_to: str | None = None) -> Any:
    return SimpleNamespace(
        body=json.dumps(body).encode(),
        headers=headers or {},
        properties={"reply_to": reply_to, "correlation_id": _TASK_ID},
        delivery_info={"routing_key": "rpc.users.get", "exchange": "tchu_events", "delivery_tag": 1},
        content_type="application/json",
        content_encoding="utf-8",
    )


def _v2(payload: dict[str, Any], reply_to: str = _DIRECT) -> Any:
    """A tchu-tchu 2.x/3.x task message (Celery protocol v2) for `rpc.users.get`."""
    body = [[json.dumps(payload)], {"routing_key": "rpc.users.get"}, {"callbacks": None}]
    return _message(body, {"task": legacy.TASK, "id": _TASK_ID}, reply_to)


@pytest.mark.parametrize(
    ("reply_to", "answered"),
    [
        ("3f2a6c1e-8d4b-3c2a-9e1f-0a1b2c3d4e5f", True),  # a Celery reply queue
        (_DIRECT, True),  # the compat client's direct reply-to, as RabbitMQ rewrote it
        ("amq.rabbitmq.reply-to", False),  # the pseudo-queue itself is never what a worker receives
        ("orders.calls", False),  # another service's queue: no reply steering
        ("amq.rabbitmq.reply-tox.abc", False),
        ("", False),
    ],
)
def test_a_tchu_tchu_call_is_answered_only_at_a_celery_queue_or_direct_reply_to(
    reply_to: str, answered: bool
) -> None:
    assert legacy.answerable(_v2({"id": 1}, reply_to=reply_to)) is answered


def test_a_call_to_a_direct_reply_to_address_is_answered_by_a_worker_that_accepts_tchu_tchu() -> None:
    registry = Registry()
    registry.add("rpc.users.get", lambda data: {"id": data["id"]})
    dispatcher = Dispatcher("users", registry, Settings(accept_tchu_tchu=True))
    outcome = dispatcher.call(_v2({"id": 1, "_tchu_meta": {"is_rpc": True}}, reply_to=_DIRECT))
    assert outcome.dead_reason is None and outcome.reply is not None
    assert json.loads(outcome.reply)["result"]["results"][0]["result"] == {"id": 1}


def test_without_the_flag_a_tchu_tchu_event_is_dead_lettered_naming_it_and_no_handler_runs() -> None:
    ran: list[Any] = []
    registry = Registry()
    registry.add("rpc.users.get", ran.append, kind="event")
    dispatcher = Dispatcher("users", registry, Settings())
    outcome = dispatcher.event(_v2({"id": 1, "_tchu_meta": {"is_rpc": False}}))
    assert ran == [] and outcome.reply is None
    assert outcome.dead_reason is not None and outcome.dead_reason.startswith("TchuTchuNotAccepted:")
    assert "--accept-tchu-tchu" in outcome.dead_reason


def test_without_the_flag_a_tchu_tchu_call_is_answered_with_celerys_failure_naming_it() -> None:
    dispatcher = Dispatcher("users", Registry(), Settings())
    outcome = dispatcher.event(_v2({"id": 1}, reply_to=_DIRECT))  # 2.x: a call
    assert outcome.reply is not None
    meta = msgspec.json.decode(outcome.reply)
    assert meta["status"] == "FAILURE" and meta["result"]["exc_type"] == unaccepted.NOT_ACCEPTED
    assert "--accept-tchu-tchu" in meta["result"]["exc_message"]


def test_without_the_flag_a_native_event_still_reaches_its_handler() -> None:
    ran: list[Any] = []
    registry = Registry()
    registry.add("rpc.users.get", ran.append, kind="event")
    outcome = Dispatcher("users", registry, Settings()).event(_message({"id": 1}))
    assert ran == [{"id": 1}] and outcome.dead_reason is None
