"""Reach tchu-tchu services: send as tchu-tchu's `TchuClient` does, read Celery's rpc:// results.

With `Settings.tchu_tchu_format`, a `Client` sends every publish and call as tchu-tchu 2.x/3.x does:
a Celery (protocol v2) task message for `tchu_tchu.dispatch_event` on the events exchange, routing
key = the topic, body `[[<payload as a JSON string>], {"routing_key": topic}, {callbacks...}]`, the
headers Celery 5's `send_task` sets, and `"_tchu_meta": {"is_rpc": bool}` in the payload (3.x; a
2.x dispatcher ignores it). A call carries `reply_to` and `correlation_id` = its task id.

A tchu-tchu worker answers as Celery's rpc:// backend does: it publishes the task's state to the
default exchange with routing key = `reply_to` and `correlation_id` = the task id. The client's
`reply_to` is RabbitMQ's direct reply-to (`amq.rabbitmq.reply-to`): the broker rewrites it to a
name it routes back to this channel, from any connection, the Celery worker's included (the
interop tests prove it), so no reply queue is declared. The result is tchu-tchu's dispatcher's:
`{"status": "completed", "results": [{"handler", "status", "result" | "error"}, ...]}`; as
tchu-tchu's client does, a call returns the first handler's result, and a handler's error becomes
a `RemoteError` with the handler's message.
"""

from __future__ import annotations

import os
import socket
from typing import Any, Final

from tchu_rpc import wire
from tchu_rpc._client.callbacks import Callbacks
from tchu_rpc._client.inflight import Inflight, Pending
from tchu_rpc.errors import DecodeError, EncodeError, MessageTooLarge, remote_error
from tchu_rpc.log import get_logger

logger = get_logger(__name__)

TASK: Final = "tchu_tchu.dispatch_event"
_META: Final = "_tchu_meta"
_JSON = wire.codec_for("json")
_EMBED: Final = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
_ORIGIN: Final = f"gen{os.getpid()}@{socket.gethostname()}"
#: Task states Celery reports before the result (`track_started`, retries): not an answer yet.
_NOT_DONE: Final = frozenset({"PENDING", "RECEIVED", "STARTED", "RETRY"})
#: What a handler error of tchu-tchu is reported as (tchu-tchu sends only its message).
HANDLER_ERROR: Final = "HandlerError"
_NOT_YET: Final = object()
_REPR_MAX: Final = 1024


def task_body(kind: str, topic: str, payload: bytes, limit: int) -> bytes:
    """Return the Celery task body that carries `payload` (JSON) to tchu-tchu's dispatcher.

    Raises:
        EncodeError: the payload is neither a JSON object nor a string (what tchu-tchu sends).
        MessageTooLarge: the task body exceeds `limit` bytes.
    """
    data = _JSON.decode(payload)
    if isinstance(data, str):  # as tchu-tchu's producer: a string is sent as it is, without `_tchu_meta`
        args = [data]
    elif isinstance(data, dict):
        data[_META] = {"is_rpc": kind == "call"}
        args = [_JSON.encode(data).decode()]
    else:
        raise EncodeError(f"tchu-tchu sends a JSON object or a string, not {type(data).__name__}")
    return wire.encode(_JSON, [args, {"routing_key": topic}, _EMBED], limit)


def properties(pending: Pending, task_id: str, reply_to: str, expiration: float | None) -> dict[str, Any]:
    """Return the AMQP properties (with Celery's headers) of a tchu-tchu task message."""
    payload = _JSON.decode(pending.body)[0][0]
    # The caller's `headers=` and context (`x-tchu-*`) ride along: Celery ignores them, a tchu_rpc
    # worker that accepts tchu-tchu reads them.
    headers: dict[str, Any] = dict(pending.extra or {})
    headers |= {
        "lang": "py",
        "task": TASK,
        "id": task_id,
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [None, None],
        "root_id": task_id,
        "parent_id": None,
        "argsrepr": _shortened(repr([payload])),
        "kwargsrepr": _shortened(repr({"routing_key": pending.topic})),
        "origin": _ORIGIN,
        "ignore_result": pending.kind != "call",
        "replaced_task_nesting": 0,
        "stamped_headers": None,
        "stamps": {},
    }
    props: dict[str, Any] = {
        "content_type": wire.JSON,
        "content_encoding": "utf-8",
        "routing_key": pending.topic,
        "headers": headers,
        "correlation_id": task_id,
        "delivery_mode": 2,
        "priority": 0,
    }
    if pending.kind == "call":
        # Mandatory: a call no tchu-tchu queue is bound for fails with `NoRoute` at once.
        props.update(reply_to=reply_to, mandatory=True, expiration=expiration)
    return props


def _shortened(text: str) -> str:
    # As Celery's `argsrepr_maxsize`: the payload must not make the header frame outgrow `frame_max`.
    return text if len(text) <= _REPR_MAX else text[: _REPR_MAX - 3] + "..."


def on_reply(inflight: Inflight, callbacks: Callbacks, limit: int, message: Any) -> None:
    """Settle the call whose Celery rpc:// result `message` is; ignore states before the result."""
    correlation_id = message.properties.get("correlation_id") or ""
    pending = inflight.get(correlation_id)
    if pending is None or pending.kind != "call":
        logger.warning("reply_dropped", correlation_id=correlation_id, call_outcome=None, service=None)
        return
    try:
        wire.check_size(len(message.body), limit)
        meta = wire.codec_of(message.content_type).decode(message.body)
        outcome = _outcome(meta, pending)
    except (DecodeError, MessageTooLarge) as exc:
        inflight.settle(correlation_id, exc)
        return
    if outcome is not _NOT_YET:
        inflight.settle(correlation_id, outcome)


def _outcome(meta: Any, pending: Pending) -> Any:
    """Return a call's result, or the `TchuError` it failed with, from Celery's result message."""
    if not isinstance(meta, dict):
        raise DecodeError(f"a Celery result is a JSON object, not {type(meta).__name__}")
    status, result = meta.get("status"), meta.get("result")
    if status in _NOT_DONE:
        return _NOT_YET
    if status != "SUCCESS":  # FAILURE, REVOKED: the dispatcher task itself failed
        info = result if isinstance(result, dict) else {}
        kind = str(info.get("exc_type") or status)
        return remote_error(kind, str(info.get("exc_message") or result), details={"state": status})
    return _first_result(result, pending)


def _first_result(result: Any, pending: Pending) -> Any:
    if isinstance(result, dict) and result.get("status") == "no_handlers":
        return remote_error("NoHandlers", f"no tchu-tchu handler for routing key {pending.topic!r}")
    results = result.get("results") if isinstance(result, dict) else None
    if not results or not isinstance(results[0], dict):
        return remote_error("NoResult", f"no result from the tchu-tchu handler of {pending.topic!r}")
    first = results[0]
    if first.get("status") != "success":
        error = str(first.get("error", "Unknown error"))
        return remote_error(HANDLER_ERROR, error, details={"handler": first.get("handler")})
    value = first.get("result")
    if pending.envelope is None:
        return value
    typed = _JSON.decode(_JSON.encode({"type": "result", "result": value}), pending.envelope)
    return typed.result
