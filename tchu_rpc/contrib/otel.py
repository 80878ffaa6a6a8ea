"""OpenTelemetry tracing for clients and workers, by middleware (`pip install 'tchu-rpc[otel]'`).

```python
tracing = Tracing()                              # the global tracer provider, or tracer_provider=...
worker = Worker(queue="users", middleware=[tracing.worker("users")])
client = Client(middleware=[tracing.client()])
```

A call or a publish is a span (`send rpc.users.get`, kind CLIENT; `publish user.created`, kind
PRODUCER) whose W3C trace context (`traceparent`, `tracestate`) travels in the message's headers
(`headers=`); the worker's handler runs in a span (`process rpc.users.get`, kind SERVER for a call,
CONSUMER for an event) that is its child and the current span while the handler runs, so the
handler's own calls and publishes are its children: a chain of calls across services is one trace.
Attributes follow OpenTelemetry's messaging conventions (`messaging.system`,
`messaging.destination.name`, `messaging.rabbitmq.destination.routing_key`,
`messaging.operation.type`).
"""

from __future__ import annotations

import threading
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from tchu_rpc.config import Settings
from tchu_rpc.delivery import Delivery
from tchu_rpc.middleware import Middleware, OutgoingMessage

_NAME = "tchu_rpc"


class Tracing:
    """A tracer; `worker()` and `client()` make the middleware that records spans with it."""

    def __init__(self, tracer_provider: trace.TracerProvider | None = None, settings: Settings | None = None):
        self.tracer = trace.get_tracer(_NAME, tracer_provider=tracer_provider)
        self.settings = settings or Settings()

    def worker(self, service: str) -> Middleware:
        """Return the middleware that runs `service`'s handlers in spans (give it to `Worker`)."""
        return WorkerTracing(self, service)

    def client(self) -> Middleware:
        """Return the middleware that sends calls and events in spans (give it to `Client`)."""
        return ClientTracing(self)

    def exchange(self, kind: str) -> str:
        """Return the exchange a message of `kind` is published to."""
        return self.settings.calls_exchange if kind == "call" else self.settings.events_exchange


def _attributes(tracing: Tracing, kind: str, topic: str, operation: str) -> dict[str, Any]:
    return {
        "messaging.system": "rabbitmq",
        "messaging.destination.name": tracing.exchange(kind),
        "messaging.rabbitmq.destination.routing_key": topic,
        "messaging.operation.type": operation,
    }


class ClientTracing(Middleware):
    """Send each call and event in a span; carry its context in the message's headers."""

    def __init__(self, tracing: Tracing) -> None:
        self._tracing = tracing
        self._spans: dict[int, trace.Span] = {}  # id(message) -> its span, until its answer or confirm

    def before_publish(self, message: OutgoingMessage) -> None:
        call = message.kind == "call"
        span = self._tracing.tracer.start_span(
            f"{'send' if call else 'publish'} {message.topic}",
            kind=SpanKind.CLIENT if call else SpanKind.PRODUCER,  # parent: the current span, if any
            attributes=_attributes(self._tracing, message.kind, message.topic, "send"),
        )
        propagate.inject(message.headers, context=trace.set_span_in_context(span))
        self._spans[id(message)] = span

    def after_reply(self, message: OutgoingMessage, outcome: Any) -> None:
        span = self._spans.pop(id(message), None)
        if span is None:
            return
        if isinstance(outcome, BaseException):
            span.record_exception(outcome)
            span.set_status(Status(StatusCode.ERROR, type(outcome).__name__))
        span.end()


class WorkerTracing(Middleware):
    """Run each handler in a span, the child of its caller's, and the current span meanwhile."""

    def __init__(self, tracing: Tracing, service: str) -> None:
        self._tracing, self._service = tracing, service
        self._running = threading.local()  # the span and context token of the handler on this thread

    def before_handler(self, delivery: Delivery) -> None:
        parent = propagate.extract(dict(delivery.caller_headers))
        call = delivery.kind == "call"
        attributes = _attributes(self._tracing, delivery.kind, delivery.topic, "process")
        attributes["messaging.consumer.group.name"] = self._service
        if delivery.message_id:
            attributes["messaging.message.id"] = delivery.message_id
        span = self._tracing.tracer.start_span(
            f"process {delivery.topic}",
            context=parent,
            kind=SpanKind.SERVER if call else SpanKind.CONSUMER,
            attributes=attributes,
        )
        self._running.now = (span, context.attach(trace.set_span_in_context(span)))

    def after_handler(self, delivery: Delivery, result: Any) -> None:
        self._end(None)

    def on_error(self, delivery: Delivery, error: BaseException) -> None:
        self._end(error)

    def _end(self, error: BaseException | None) -> None:
        running = getattr(self._running, "now", None)
        if running is None:
            return
        self._running.now = None
        span, token = running
        if error is not None:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        context.detach(token)
        span.end()
