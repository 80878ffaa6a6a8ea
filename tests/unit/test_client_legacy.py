"""A client in tchu-tchu's format, without a broker: the task message it sends, the results it reads."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest

from tchu_rpc import RemoteError, Settings
from tchu_rpc._client import legacy
from tchu_rpc._client.callbacks import CallFuture
from tchu_rpc._client.inflight import Inflight, Pending
from tchu_rpc.compat import client as compat_client
from tchu_rpc.errors import DecodeError, EncodeError, MessageTooLarge
from tchu_rpc.wire import envelope_for


class _User(msgspec.Struct):
    id: int


def _pending(kind: str = "call", envelope: Any = None) -> Pending:
    body = legacy.task_body(kind, "rpc.users.get", b'{"id":7}', 1 << 20)
    pending = Pending(CallFuture(), kind, "rpc.users.get", body, deadline=0.0, retry=False)
    pending.envelope = envelope
    return pending


def _reply(meta: Any, correlation_id: str = "c1") -> Any:
    body = json.dumps(meta).encode()
    return SimpleNamespace(
        body=body, content_type="application/json", properties={"correlation_id": correlation_id}
    )


def _settle(meta: Any, envelope: Any = None) -> Any:
    inflight = Inflight()
    pending = _pending(envelope=envelope)
    inflight.add("c1", pending)
    legacy.on_reply(inflight, None, 1 << 20, _reply(meta))  # type: ignore[arg-type]
    if not pending.future.done():
        return "pending"
    return pending.future.exception() or pending.future.result()


def _completed(*results: dict[str, Any]) -> dict[str, Any]:
    return {"status": "SUCCESS", "result": {"status": "completed", "results": list(results)}, "task_id": "c1"}


@pytest.mark.parametrize(("kind", "is_rpc"), [("call", True), ("event", False)])
def test_task_body_carries_the_payload_as_a_json_string_with_tchu_meta(kind: str, is_rpc: bool) -> None:
    args, kwargs, embed = json.loads(legacy.task_body(kind, "users.created", b'{"id":7}', 1 << 20))
    assert json.loads(args[0]) == {"id": 7, "_tchu_meta": {"is_rpc": is_rpc}}
    assert kwargs == {"routing_key": "users.created"}
    assert embed == {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def test_task_body_sends_a_string_as_it_is_and_refuses_other_values() -> None:
    assert json.loads(legacy.task_body("event", "t", b'"raw"', 1 << 20))[0] == ["raw"]
    with pytest.raises(EncodeError, match="JSON object or a string"):
        legacy.task_body("event", "t", b"[1]", 1 << 20)
    with pytest.raises(MessageTooLarge):
        legacy.task_body("event", "t", b'{"a":"' + b"x" * 100 + b'"}', 64)


def test_call_properties_ask_for_the_reply_and_name_the_task() -> None:
    props = legacy.properties(_pending(), "c1", "amq.rabbitmq.reply-to", 2.0)
    assert props["reply_to"] == "amq.rabbitmq.reply-to"
    assert (props["correlation_id"], props["headers"]["id"], props["headers"]["root_id"]) == (
        "c1",
        "c1",
        "c1",
    )
    assert props["headers"]["task"] == "tchu_tchu.dispatch_event"
    assert props["mandatory"] is True and props["routing_key"] == "rpc.users.get"
    event = legacy.properties(_pending("event"), "e1", "amq.rabbitmq.reply-to", None)
    assert "reply_to" not in event and event["headers"]["ignore_result"] is True


def test_argsrepr_of_a_large_payload_is_shortened_as_celery_does() -> None:
    body = legacy.task_body("event", "t", json.dumps({"a": "x" * 5000}).encode(), 1 << 20)
    pending = Pending(CallFuture(), "event", "t", body, deadline=0.0, retry=False)
    assert len(legacy.properties(pending, "e1", "", None)["headers"]["argsrepr"]) == 1024


def test_call_returns_the_first_handlers_result() -> None:
    assert _settle(_completed({"handler": "get", "status": "success", "result": {"id": 7}})) == {"id": 7}


def test_typed_call_decodes_the_result_into_its_response_type() -> None:
    result = _settle(
        _completed({"handler": "get", "status": "success", "result": {"id": 7}}), envelope_for(_User)
    )
    assert result == _User(7)


def test_handler_error_becomes_a_remote_error_with_its_message() -> None:
    error = _settle(_completed({"handler": "get", "status": "error", "error": "no user 7"}))
    assert isinstance(error, RemoteError)
    assert (error.type, error.message, error.details) == ("HandlerError", "no user 7", {"handler": "get"})


@pytest.mark.parametrize(
    ("meta", "kind"),
    [
        ({"status": "SUCCESS", "result": {"status": "no_handlers", "routing_key": "t"}}, "NoHandlers"),
        ({"status": "SUCCESS", "result": {"status": "completed", "results": []}}, "NoResult"),
        ({"status": "FAILURE", "result": {"exc_type": "KeyError", "exc_message": ["x"]}}, "KeyError"),
    ],
)
def test_a_call_that_got_no_handlers_result_raises_remote_error(meta: dict[str, Any], kind: str) -> None:
    error = _settle(meta)
    assert isinstance(error, RemoteError) and error.type == kind


def test_states_before_the_result_leave_the_call_pending() -> None:
    assert _settle({"status": "STARTED", "result": {"pid": 1}}) == "pending"


def test_a_result_that_is_not_celerys_fails_the_call_with_decode_error() -> None:
    assert isinstance(_settle(["not", "a", "result"]), DecodeError)


def test_compat_default_client_sends_in_tchu_tchu_format_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Not a factory a Django test set up earlier in this process (`tchu_rpc.django`'s app sets one)
    monkeypatch.setattr(compat_client, "_factory", None)
    previous = compat_client.set_default_client(None)
    try:
        monkeypatch.delenv("TCHU_RPC_TCHU_TCHU_FORMAT", raising=False)
        made = compat_client.default_client()
        assert made.settings.tchu_tchu_format is True
        made.close()
        compat_client.set_default_client(None)
        monkeypatch.setenv("TCHU_RPC_TCHU_TCHU_FORMAT", "false")
        made = compat_client.default_client()
        assert made.settings.tchu_tchu_format is False
        made.close()
    finally:
        compat_client.set_default_client(previous)
    assert Settings().tchu_tchu_format is False
