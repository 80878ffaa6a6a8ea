"""Reading tchu-tchu's Celery task messages and answering them in Celery's rpc:// format (no broker)."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from tchu_rpc import Registry, Settings
from tchu_rpc._worker import legacy
from tchu_rpc._worker.dispatch import Dispatcher
from tchu_rpc.errors import DecodeError

_REPLY_QUEUE = "3f2a6c1e-8d4b-3c2a-9e1f-0a1b2c3d4e5f"
_TASK_ID = "9b0e1c2d-aaaa-4bbb-8ccc-111122223333"
LIMIT = 1 << 20


def _message(body: Any, headers: dict[str, Any] | None = None, reply_to: str | None = _REPLY_QUEUE) -> Any:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    props = {"reply_to": reply_to, "correlation_id": _TASK_ID}
    info = {"routing_key": "rpc.users.get", "exchange": "tchu_events", "delivery_tag": 1}
    return SimpleNamespace(
        body=raw,
        headers=headers or {},
        properties=props,
        delivery_info=info,
        content_type="application/json",
        content_encoding="utf-8",
    )


def _v2(payload: dict[str, Any], **kw: Any) -> Any:
    body = [[json.dumps(payload)], {"routing_key": "rpc.users.get"}, {"callbacks": None}]
    return _message(body, {"task": legacy.TASK, "id": _TASK_ID}, **kw)


def test_recognize_reads_a_2x_message_as_a_call() -> None:
    task = legacy.recognize(_v2({"id": 1}), LIMIT)
    assert task == legacy.Task(_TASK_ID, "rpc.users.get", {"id": 1}, is_rpc=True)


def test_recognize_reads_3x_meta_and_drops_it() -> None:
    task = legacy.recognize(_v2({"id": 1, "_tchu_meta": {"is_rpc": False}}), LIMIT)
    assert task is not None and task.payload == {"id": 1} and not task.is_rpc


def test_recognize_reads_protocol_v1() -> None:
    body = {
        "task": legacy.TASK,
        "id": _TASK_ID,
        "args": [json.dumps({"a": 1})],
        "kwargs": {"routing_key": "rpc.users.get"},
    }
    task = legacy.recognize(_message(body), LIMIT)
    assert task == legacy.Task(_TASK_ID, "rpc.users.get", {"a": 1}, is_rpc=True)


@pytest.mark.parametrize(
    ("body", "headers"),
    [({"id": 1}, None), ({"task": "other"}, None), (b"[1]", None), ({"a": 1}, {"task": "other.task"})],
)
def test_recognize_leaves_native_messages_alone(body: Any, headers: dict[str, Any] | None) -> None:
    assert legacy.recognize(_message(body, headers), LIMIT) is None


def test_recognize_refuses_a_malformed_tchu_tchu_body() -> None:
    with pytest.raises(DecodeError):
        legacy.recognize(_message({"not": "a list"}, {"task": legacy.TASK}), LIMIT)


@pytest.mark.parametrize("named", ["rpc.admin.wipe", "x" * 10_000, 5])
def test_the_topic_is_the_routing_key_and_a_body_naming_another_is_refused(named: Any) -> None:
    # RabbitMQ's topic permissions check the routing key: the body must not pick another handler.
    body = [[json.dumps({"id": 1})], {"routing_key": named}, {"callbacks": None}]
    with pytest.raises(DecodeError, match=r"routed as 'rpc\.users\.get'") as refused:
        legacy.recognize(_message(body, {"task": legacy.TASK}), LIMIT)
    assert len(str(refused.value)) < 300


def test_a_body_over_the_size_limit_is_not_decoded_as_tchu_tchu() -> None:
    message = _v2({"id": 1, "pad": "x" * 2000})
    assert legacy.recognize(message, 1000) is None
    registry = Registry()
    registry.subscribe("rpc.users.get", kind="event")(lambda data: None)
    dispatcher = Dispatcher("users", registry, Settings(accept_tchu_tchu=True, max_message_bytes=1000))
    outcome = dispatcher.event(message)
    assert outcome.dead_reason is not None and outcome.dead_reason.startswith("MessageTooLarge")


def test_a_call_nothing_handles_on_the_events_lane_is_answered_no_handlers_as_tchu_tchu_does() -> None:
    message = _v2({"id": 1})
    message.delivery_info["routing_key"] = "rpc.nobody.home"
    message.body = json.dumps([[json.dumps({"id": 1})], {"routing_key": "rpc.nobody.home"}, {}]).encode()
    outcome = legacy.event(_dispatcher(), message, None)
    assert outcome.reply is not None and outcome.dead_reason is None
    assert json.loads(outcome.reply)["result"] == {"status": "no_handlers", "routing_key": "rpc.nobody.home"}


def _dispatcher(accept: bool = True) -> Dispatcher:
    registry = Registry()

    @registry.subscribe("rpc.users.get", kind="call")
    def get(data: dict[str, Any]) -> dict[str, Any]:
        if data["id"] < 0:
            raise ValueError("negative id")
        return {"user": data["id"]}

    return Dispatcher("users", registry, Settings(accept_tchu_tchu=accept))


def test_call_is_answered_in_celery_rpc_format() -> None:
    outcome = _dispatcher().call(_v2({"id": 5, "_tchu_meta": {"is_rpc": True}}))
    assert outcome.reply is not None and outcome.dead_reason is None
    reply = json.loads(outcome.reply)
    assert reply["status"] == "SUCCESS" and reply["task_id"] == _TASK_ID
    assert reply["result"]["results"] == [{"handler": "get", "status": "success", "result": {"user": 5}}]


def test_handler_error_is_reported_as_an_error_entry() -> None:
    outcome = _dispatcher().call(_v2({"id": -1}))
    assert outcome.reply is not None
    [entry] = json.loads(outcome.reply)["result"]["results"]
    assert entry == {"handler": "get", "status": "error", "error": "negative id"}


def test_call_to_a_queue_not_named_by_celery_is_dead_lettered_unanswered() -> None:
    outcome = _dispatcher().call(_v2({"id": 5}, reply_to="users.calls"))
    assert outcome.reply is None and outcome.dead_reason is not None
    assert outcome.dead_reason.startswith("BadReplyTo")


def test_tchu_tchu_message_is_not_read_when_not_accepted() -> None:
    outcome = _dispatcher(accept=False).call(_v2({"id": 5}))
    assert outcome.reply is None and outcome.dead_reason is not None  # its reply_to is not ours
