"""Serve tchu-tchu clients: read their Celery task messages, answer calls as Celery's rpc:// backend.

tchu-tchu (2.x and 3.x) sends every publish and call as a Celery task message for the task
`tchu_tchu.dispatch_event`, to the events exchange with the topic as routing key. A message is
tchu-tchu's when

- its `task` header is `tchu_tchu.dispatch_event` (Celery's protocol v2, `TchuClient`): the body is
  `[[<payload as a JSON string>], {"routing_key": topic}, {callbacks...}]`; or
- it carries no `task` header and its body is a JSON object whose `task` is `tchu_tchu.dispatch_event`
  (protocol v1, 3.x `ServerlessProducer`): `{"task", "id", "args": [payload], "kwargs", ...}`.

The payload is a JSON object; 3.x adds `"_tchu_meta": {"is_rpc": bool}` (removed before a handler
sees it). A 2.x message has no `_tchu_meta` and is a call, as tchu-tchu 3.x's own dispatcher takes it.

A call is answered the way Celery's rpc:// backend answers a task: to the default exchange with
routing key = the message's `reply_to` and `correlation_id` = its task id, body
`{"status": "SUCCESS", "result": {"status": "completed", "routing_key": ..., "handlers_executed": n,
"results": [{"handler": name, "status": "success", "result": r} | {..., "status": "error", "error":
str}]}, "traceback": null, "children": [], "date_done": ..., "task_id": ...}`, or with the result
`{"status": "no_handlers", "routing_key": ...}`. `TchuClient.call` returns `results[0]["result"]` or
raises `PublishError("RPC call failed: Handler '<name>' failed: <error>")`.

On the events lane (`event`) a tchu-tchu message whose topic has call handlers runs them as a call
(answered if it is one), else its event handlers: tchu-tchu's dispatcher ran whatever matched. A
Celery task message of another task (a service's own `shared_task`s share its tchu-tchu queue) is
dead-lettered: tchu_rpc does not run Celery tasks.

Take-over (`Settings.legacy_queue`): the worker consumes the queue tchu-tchu's `setup_celery_queue`
declared, on the events lane, and acks each message after handling it (Celery acks a
`tchu_tchu.dispatch_event` task as it starts it: tchu-tchu sets no `acks_late`). A message
Celery prefetched but had not started when it stopped is redelivered to tchu_rpc.

Trust: `reply_to` of a tchu-tchu call is a Celery reply queue, which is named by a UUID, or RabbitMQ's
direct reply-to address (`amq.rabbitmq.reply-to.*`, as the broker rewrites it), which
`tchu_rpc.compat.TchuClient` asks its answers on. Only such a name is answered (anything else is
dead-lettered as `BadReplyTo`), so a publisher allowed on the events exchange can make the worker
publish a result into a queue named by a UUID or to a caller's channel, and nowhere else.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from tchu_rpc import wire
from tchu_rpc._worker.invoke import invoke
from tchu_rpc._worker.messages import delivery_of, describe, topic_of
from tchu_rpc.errors import DecodeError, EncodeError, MessageTooLarge
from tchu_rpc.log import get_logger

logger = get_logger(__name__)

TASK: Final = "tchu_tchu.dispatch_event"
_META: Final = "_tchu_meta"
#: Celery names a client's rpc:// reply queue by a UUID (`app.thread_oid`).
_CELERY_REPLY_QUEUE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
_TASK_BYTES: Final = TASK.encode()
_JSON = wire.codec_for("json")


@dataclass(frozen=True, slots=True)
class Task:
    """A tchu-tchu message, decoded: its task id, topic, payload (without `_tchu_meta`) and kind."""

    id: str | None
    topic: str
    payload: Any
    is_rpc: bool


class _NotTchuTchu(Exception):
    """The message looked like tchu-tchu's but is not a task message of its dispatcher."""


def recognize(message: Any, limit: int) -> Task | None:
    """Return the tchu-tchu task `message` carries, or None when it is not tchu-tchu's.

    A body over `limit` bytes is not looked into: the native path refuses it for its size.

    Raises:
        DecodeError: it names tchu-tchu's task but its body is not what tchu-tchu sends.
    """
    if len(message.body) > limit:
        return None
    headers = message.headers or {}
    task_header = headers.get("task")
    if task_header is not None:
        if task_header != TASK:
            return None
        return _v2(message, headers)
    body = message.body
    # Protocol v1 only when cheap signs say so: a native event's JSON object is decoded once, here.
    if not body[:1] == b"{" or _TASK_BYTES not in body:
        return None
    try:
        return _v1(message)
    except _NotTchuTchu:
        return None


def _v2(message: Any, headers: dict[str, Any]) -> Task:
    try:
        args, kwargs, _embed = _JSON.decode(message.body)
        raw = args[0]
    except (DecodeError, ValueError, TypeError, IndexError, KeyError) as exc:
        raise DecodeError(f"tchu-tchu task message (protocol v2) with an unexpected body: {exc}") from None
    topic = _topic(message, kwargs)
    return _task(headers.get("id") or message.properties.get("correlation_id"), topic, raw)


def _v1(message: Any) -> Task:
    try:
        body = _JSON.decode(message.body)
    except DecodeError:
        raise _NotTchuTchu from None
    if not isinstance(body, dict) or body.get("task") != TASK or not isinstance(body.get("args"), list):
        raise _NotTchuTchu
    if not body["args"]:
        raise DecodeError("tchu-tchu task message (protocol v1) without arguments")
    return _task(body.get("id"), _topic(message, body.get("kwargs")), body["args"][0])


def _topic(message: Any, kwargs: Any) -> str:
    """Return the task's topic: the one it was routed by, which tchu-tchu also writes in its body.

    The body's word is not taken: RabbitMQ's topic permissions check the routing key, so a publisher
    allowed one topic could otherwise reach the handler of any other.
    """
    routed = topic_of(message)
    key = kwargs.get("routing_key") if isinstance(kwargs, dict) else None
    if key is not None and key != routed:
        named = key[:100] if isinstance(key, str) else type(key).__name__
        raise DecodeError(f"tchu-tchu task message for topic {named!r} in its body, routed as {routed!r}")
    return routed


def _task(task_id: Any, topic: str, raw: Any) -> Task:
    payload = raw
    if isinstance(raw, str | bytes):
        try:
            payload = _JSON.decode(raw.encode() if isinstance(raw, str) else raw)
        except DecodeError as exc:
            raise DecodeError(f"tchu-tchu payload is not JSON: {exc}") from None
    is_rpc = True  # 2.x sends no `_tchu_meta`: its messages are calls, as 3.x's dispatcher assumes
    if isinstance(payload, dict) and _META in payload:
        meta = payload[_META]
        is_rpc = bool(meta.get("is_rpc", False)) if isinstance(meta, dict) else False
        payload = {k: v for k, v in payload.items() if k != _META}
    return Task(task_id if isinstance(task_id, str) else None, topic, payload, is_rpc)


class _View:
    """A delivery seen as a native one: the tchu-tchu payload as its JSON body."""

    def __init__(self, message: Any, body: bytes) -> None:
        self._message = message
        self.body = body
        self.content_type = wire.JSON
        self.content_encoding = "utf-8"

    def __getattr__(self, name: str) -> Any:
        return getattr(self._message, name)


def event(dispatcher: Any, message: Any, received: float | None) -> Any:
    """Return the outcome of a delivery on the events lane (a tchu-tchu message or a native event)."""
    from tchu_rpc._worker.dispatch import Outcome  # dispatch imports this module

    if dispatcher.accept_tchu_tchu:
        try:
            task = recognize(message, dispatcher.limit)
        except DecodeError:
            task = None  # `dispatcher.event` dead-letters it, saying why
        registry = dispatcher.registry
        if task is not None and (
            registry.match(task.topic, "call") or not registry.match(task.topic, "event")
        ):
            return call(dispatcher, task, message, received)  # answered, also when nothing handles it
        other = (message.headers or {}).get("task")
        if task is None and isinstance(other, str) and other != TASK:
            reason = f"a Celery task message of {other!r}: tchu_rpc runs only {TASK!r}"
            return Outcome(dead_reason=f"NotTchuTchu: {reason}")
    return dispatcher.event(message)


def recognized_call(dispatcher: Any, message: Any, received: float | None) -> Any:
    """Return the `Outcome` of a tchu-tchu call on the calls lane, or None for a native message."""
    from tchu_rpc._worker.dispatch import Outcome  # dispatch imports this module

    try:
        task = recognize(message, dispatcher.limit)
    except DecodeError as exc:  # its reply_to is not ours to trust: no answer
        return Outcome(dead_reason=f"DecodeError: {exc}")
    return None if task is None else call(dispatcher, task, message, received)


def native_event(message: Any, limit: int) -> tuple[Any, Any]:
    """Return a tchu-tchu event as a native one, with None; or the message and why it is refused."""
    from tchu_rpc._worker.dispatch import Outcome  # dispatch imports this module

    try:
        task = recognize(message, limit)
    except DecodeError as exc:
        return message, Outcome(dead_reason=f"DecodeError: {exc}")
    return (message, None) if task is None else (as_event(message, task), None)


def as_event(message: Any, task: Task) -> Any:
    """Return `message` as a native event whose body is the task's payload."""
    return _View(message, _JSON.encode(task.payload))


#: Why a tchu-tchu call's `reply_to` is refused, when it is neither of the addresses answered.
REPLY_TO_EXPECTED: Final = "a Celery reply queue (a UUID) or a direct reply-to address"
_DIRECT_REPLY_TO: Final = "amq.rabbitmq.reply-to."


def answerable(message: Any) -> bool:
    """Tell whether a tchu-tchu call names a reply address (`REPLY_TO_EXPECTED`) and a correlation id.

    The direct reply-to address is the one RabbitMQ rewrote (`amq.rabbitmq.reply-to.<token>`): the
    bare pseudo-queue name is what a caller publishes, never what a worker receives.
    """
    reply_to = message.properties.get("reply_to")
    return bool(
        isinstance(reply_to, str)
        and (_CELERY_REPLY_QUEUE.match(reply_to) or reply_to.startswith(_DIRECT_REPLY_TO))
        and message.properties.get("correlation_id")
    )


def call(dispatcher: Any, task: Task, message: Any, received: float | None) -> Any:
    """Run a tchu-tchu call's handlers as tchu-tchu's dispatcher does; return the worker's `Outcome`."""
    from tchu_rpc._worker.dispatch import Outcome  # dispatch imports this module

    reply_to = message.properties.get("reply_to")
    if task.is_rpc and reply_to and not answerable(message):
        reason = f"reply_to {reply_to!r} is not {REPLY_TO_EXPECTED}"
        logger.warning("request_refused", service=dispatcher.service, reason=reason, **describe(message))
        return Outcome(dead_reason=f"BadReplyTo: {reason}")
    delivery = delivery_of("call", message, received)
    handlers = dispatcher.registry.match(task.topic, "call")
    results = []
    for handler in handlers:
        name = getattr(handler.fn, "__name__", handler.name)
        try:
            data = _JSON.decode(_JSON.encode(task.payload), handler.data_type)
        except DecodeError as exc:
            results.append({"handler": name, "status": "error", "error": str(exc)})
            continue
        reply = invoke(dispatcher.service, handler, data, delivery, None, dispatcher.middleware)
        if isinstance(reply, wire.Failure):
            results.append({"handler": name, "status": "error", "error": reply.error.message})
        else:
            results.append({"handler": name, "status": "success", "result": reply.result})
    if not handlers:  # tchu-tchu's dispatcher answers that; its client raises "No handlers found"
        logger.warning("request_unhandled", service=dispatcher.service, **describe(message))
    if not task.is_rpc or not answerable(message):
        return Outcome()  # a publish to a call topic (3.x) or nobody to answer: run, then ack
    if not handlers:
        result: dict[str, Any] = {"status": "no_handlers", "routing_key": task.topic}
    else:
        result = {"status": "completed", "routing_key": task.topic, "is_rpc": True}
        result.update(handlers_executed=len(results), results=results)
    return Outcome(reply=_celery_reply(message, task, result, dispatcher.limit), content_type=wire.JSON)


def _celery_reply(message: Any, task: Task, result: dict[str, Any], limit: int) -> bytes:
    """Encode `result` as Celery's rpc:// backend stores a task's return value."""
    task_id = task.id or message.properties.get("correlation_id")
    now = datetime.datetime.now(datetime.UTC).isoformat()
    meta: dict[str, Any] = {
        "status": "SUCCESS",
        "result": result,
        "traceback": None,
        "children": [],
        "date_done": now,
    }
    meta["task_id"] = task_id
    try:
        return wire.encode(_JSON, meta, limit)
    except (EncodeError, MessageTooLarge) as exc:
        # As tchu-tchu's dispatcher reports a handler whose result it cannot send: an error entry.
        failed = [{"handler": r["handler"], "status": "error", "error": str(exc)} for r in result["results"]]
        meta["result"] = {**result, "results": failed}
        return msgspec.json.encode(meta)
