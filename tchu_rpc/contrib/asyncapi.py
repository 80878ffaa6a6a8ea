"""AsyncAPI 3.0: a service's contract as a document another team can read without the code.

`document({"users": registry}, settings)` describes each service's handlers (`tchu-rpc schema` is
its shell):

- a channel per handled topic pattern, its `address` the pattern, bound (AMQP binding 0.3.0) to the
  calls or events exchange; a `receive` operation on it, the worker's side. A call's operation has
  a `reply` on the `replies` channel, whose address is the caller's `reply_to` (direct reply-to);
- a message per handler: its request's JSON Schema (the typed `Topic`'s `request`, else the
  handler's annotation), and for a call its reply envelope as on the wire: `{"type": "result",
  "result": <response>}`, `{"type": "error", "error": {type, message, code, details: <error>}}`, or
  `{"type": "progress", "info": ...}` before it;
- a channel per queue of the service (`<service>.calls`, `.events`, `.dead`), an AMQP `queue`
  binding, its description naming the exchange and patterns it is bound with.

An operation's `summary` names its handlers, its `description` is their docstrings.

The schemas are msgspec's (`msgspec.json.schema_components`) under `components.schemas`.
An untyped request or response is `{}`: any JSON value.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Mapping
from typing import Any, Final

import msgspec

from tchu_rpc import wire
from tchu_rpc.config import Settings
from tchu_rpc.errors import ConfigError
from tchu_rpc.registry import Handler, Kind, Registry

ASYNCAPI_VERSION: Final = "3.0.0"
AMQP_BINDING_VERSION: Final = "0.3.0"
REPLIES: Final = "replies"
_SCHEMAS: Final = "#/components/schemas/{name}"
_KINDS: Final[tuple[Kind, ...]] = ("call", "event")


def document(
    services: Mapping[str, Registry],
    settings: Settings,
    *,
    title: str | None = None,
    version: str = "0.0.0",
) -> dict[str, Any]:
    """Return the AsyncAPI 3.0 document (plain JSON data) of `services`: service name -> its handlers.

    Raises:
        ConfigError: a handler's request, response or error type has no JSON Schema (msgspec's reason).
    """
    builder = _Builder(settings)
    for service, registry in services.items():
        builder.service(service, registry)
    return builder.finish(title or ", ".join(services) or "tchu_rpc services", version)


class _Builder:
    """Collect channels, operations and messages; resolve every type's schema at the end."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.channels: dict[str, Any] = {}
        self.operations: dict[str, Any] = {}
        self.messages: dict[str, Any] = {}
        self.types: list[tuple[str, Any, str]] = []  # (message id, type, what it is: for errors)
        self.replies: dict[str, Any] = {}

    def service(self, service: str, registry: Registry) -> None:
        """Add `service`'s queues, and a channel and an operation per pattern of its handlers."""
        kinds = registry.kinds()
        for kind in _KINDS:
            if kind in kinds:
                self._queue(f"{service}.{kind}s", registry.patterns(kind), kind)
        self._queue(f"{service}.dead", (), None)
        for kind in _KINDS:
            for pattern in registry.patterns(kind):
                handlers = [h for h in registry.handlers if h.kind == kind and h.pattern == pattern]
                self._operation(service, kind, pattern, handlers)

    def _queue(self, name: str, patterns: tuple[str, ...], kind: Kind | None) -> None:
        exchange = {"call": self.settings.calls_exchange, "event": self.settings.events_exchange}
        bound = f"bound to exchange {exchange[kind]!r} with {', '.join(patterns)}" if kind else "dead letters"
        self.channels[_slug(f"queue.{name}")] = {
            "address": name,
            "description": f"Queue {name}: {bound}.",
            "bindings": {
                "amqp": {
                    "is": "queue",
                    "queue": {"name": name, "durable": True, "exclusive": False, "autoDelete": False},
                    "bindingVersion": AMQP_BINDING_VERSION,
                }
            },
        }

    def _operation(self, service: str, kind: Kind, pattern: str, handlers: list[Handler]) -> None:
        channel_id = _slug(f"{service}.{kind}.{pattern}")
        messages: dict[str, Any] = {}
        for handler in handlers:
            message_id = _slug(f"{channel_id}.{handler.name.rsplit('.', 1)[-1]}")
            self._message(message_id, handler.data_type, f"request of {handler.name}")
            messages[message_id] = {"$ref": f"#/components/messages/{message_id}"}
        self.channels[channel_id] = {
            "address": pattern,
            "description": f"{'Calls' if kind == 'call' else 'Events'} that service {service!r} handles.",
            "messages": messages,
            "bindings": {"amqp": self._exchange_binding(kind)},
        }
        operation: dict[str, Any] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{channel_id}"},
            "summary": ", ".join(h.name for h in handlers),
            "messages": [{"$ref": f"#/channels/{channel_id}/messages/{m}"} for m in messages],
            "bindings": {"amqp": {"ack": True, "bindingVersion": AMQP_BINDING_VERSION}},
        }
        described = [doc for h in handlers if (doc := _docstring(h.fn))]
        if described:
            operation["description"] = "\n\n".join(described)
        if kind == "call":
            operation["reply"] = self._reply(channel_id, handlers[0])
        self.operations[channel_id] = operation

    def _reply(self, channel_id: str, handler: Handler) -> dict[str, Any]:
        reply_id = _slug(f"{channel_id}.reply")
        response, error = _response_type(handler), Any
        if handler.contract is not None:
            error = handler.contract.error
        self._message(reply_id, _envelope(reply_id, response, error), f"reply of {handler.name}")
        self.replies[reply_id] = {"$ref": f"#/components/messages/{reply_id}"}
        return {
            "address": {
                "location": "$message.header#/reply_to",
                "description": "The request's AMQP reply_to property (direct reply-to).",
            },
            "channel": {"$ref": f"#/channels/{REPLIES}"},
            "messages": [{"$ref": f"#/channels/{REPLIES}/messages/{reply_id}"}],
        }

    def _exchange_binding(self, kind: Kind) -> dict[str, Any]:
        name = self.settings.calls_exchange if kind == "call" else self.settings.events_exchange
        return {
            "is": "routingKey",
            "exchange": {"name": name, "type": "topic", "durable": True, "autoDelete": False},
            "bindingVersion": AMQP_BINDING_VERSION,
        }

    def _message(self, message_id: str, type_: Any, what: str) -> None:
        self.messages[message_id] = {"name": message_id, "title": what, "contentType": wire.JSON}
        self.types.append((message_id, type_, what))

    def finish(self, title: str, version: str) -> dict[str, Any]:
        """Return the document, with the JSON Schema of every message's payload."""
        payloads, schemas = _schemas(self.types)
        for (message_id, _, _), payload in zip(self.types, payloads, strict=True):
            self.messages[message_id]["payload"] = payload
        if self.replies:
            self.channels[REPLIES] = {
                "address": None,
                "description": "A caller's reply address: its request's reply_to, on the default exchange.",
                "messages": self.replies,
            }
        return {
            "asyncapi": ASYNCAPI_VERSION,
            "info": {"title": title, "version": version},
            "defaultContentType": wire.JSON,
            "channels": self.channels,
            "operations": self.operations,
            "components": {"schemas": schemas, "messages": self.messages},
        }


def _docstring(fn: Any) -> str | None:
    """Return a handler function's own docstring (not that of a partial's or a callable's class)."""
    return inspect.getdoc(fn) if inspect.isfunction(fn) or inspect.ismethod(fn) else None


def _response_type(handler: Handler) -> Any:
    """Return a call handler's result type: its typed topic's `response`, else its return annotation."""
    if handler.contract is not None and handler.contract.response is not Any:
        return handler.contract.response
    try:
        hint = typing.get_type_hints(handler.fn).get("return", Any)
    except Exception:  # an unresolvable annotation documents nothing
        return Any
    return Any if hint is type(None) else hint


def _envelope(name: str, response: Any, error: Any) -> Any:
    """Return the type of what a call's reply address receives (`wire.Result | wire.Failure | Progress`)."""
    prefix = re.sub(r"[^0-9A-Za-z]", "", name.title())
    info = msgspec.defstruct(
        f"{prefix}ErrorInfo",
        [("type", str), ("message", str, ""), ("code", str | None, None), ("details", error, None)],
        frozen=True,
        omit_defaults=True,
    )
    failure = msgspec.defstruct(f"{prefix}Failure", [("error", info)], tag="error", frozen=True)
    result = msgspec.defstruct(
        f"{prefix}Result", [("result", response, None)], tag="result", frozen=True, omit_defaults=True
    )
    return result | failure | wire.Progress


def _schemas(types: list[tuple[str, Any, str]]) -> tuple[list[Any], dict[str, Any]]:
    """Return each type's JSON Schema and the components they refer to, as AsyncAPI schema objects."""
    try:
        payloads, components = msgspec.json.schema_components([t for _, t, _ in types], ref_template=_SCHEMAS)
    except (TypeError, ValueError):
        for _, type_, what in types:  # find the culprit to name it
            try:
                msgspec.json.schema(type_)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"the {what} has no JSON Schema ({type_!r}): {exc}") from exc
        raise
    return [_asyncapi_schema(p) for p in payloads], {k: _asyncapi_schema(v) for k, v in components.items()}


def _asyncapi_schema(schema: Any) -> Any:
    """Return `schema` with OpenAPI's discriminator object as AsyncAPI's (the property's name)."""
    if isinstance(schema, dict):
        fixed = {k: _asyncapi_schema(v) for k, v in schema.items()}
        found = fixed.get("discriminator")
        if isinstance(found, dict) and isinstance(found.get("propertyName"), str):
            fixed["discriminator"] = found["propertyName"]
        return fixed
    if isinstance(schema, list):
        return [_asyncapi_schema(item) for item in schema]
    return schema


def _slug(text: str) -> str:
    """Return `text` as a component key (`^[\\w.-]+$`): a topic's wildcards spelled out."""
    return re.sub(r"[^\w.\-]", "_", text.replace("*", "STAR").replace("#", "HASH"))
