"""Tracing: a chain of calls and events across two services is one trace, with parent/child links."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tchu_rpc import Registry, RemoteError
from tchu_rpc.contrib.otel import Tracing
from tchu_rpc.testing import TchuFactory

WAIT = 10.0


def _until(check: Callable[[], bool], what: str, within: float = WAIT) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within} s: {what}")
        time.sleep(0.05)


def _parent(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def test_a_call_chain_across_two_services_is_one_trace(tchu: TchuFactory) -> None:
    # Given service b (a call and an event handler) and service a, whose handler calls b and tells b
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = Tracing(provider, settings=tchu.settings)
    noted = threading.Event()
    b = Registry()
    b.subscribe("rpc.tb.get")(lambda data: data + 1)
    b.subscribe("tb.noted")(lambda data: noted.set())
    tchu.worker(b, "b", middleware=[tracing.worker("b")])
    inner = tchu.client(middleware=[tracing.client()])
    a = Registry()

    @a.subscribe("rpc.ta.get")
    def get(data: int) -> Any:
        inner.publish("tb.noted", data)
        return inner.call("rpc.tb.get", data)

    tchu.worker(a, "a", middleware=[tracing.worker("a")])
    outer = tchu.client(middleware=[tracing.client()])

    # When a caller calls a
    assert outer.call("rpc.ta.get", 1) == 2
    assert noted.wait(WAIT)
    _until(lambda: len(exporter.get_finished_spans()) == 6, "six spans")

    # Then the six spans are one trace: caller -> a -> (b's call, b's event), each a child of the one before
    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert len({span.context.trace_id for span in spans.values()}) == 1
    send_a, process_a = spans["send rpc.ta.get"], spans["process rpc.ta.get"]
    assert _parent(send_a) is None
    assert _parent(process_a) == send_a.context.span_id
    assert _parent(spans["send rpc.tb.get"]) == process_a.context.span_id
    assert _parent(spans["publish tb.noted"]) == process_a.context.span_id
    assert _parent(spans["process rpc.tb.get"]) == spans["send rpc.tb.get"].context.span_id
    assert _parent(spans["process tb.noted"]) == spans["publish tb.noted"].context.span_id
    kinds = {name: span.kind for name, span in spans.items()}
    assert kinds == {
        "send rpc.ta.get": SpanKind.CLIENT,
        "process rpc.ta.get": SpanKind.SERVER,
        "send rpc.tb.get": SpanKind.CLIENT,
        "process rpc.tb.get": SpanKind.SERVER,
        "publish tb.noted": SpanKind.PRODUCER,
        "process tb.noted": SpanKind.CONSUMER,
    }
    attributes = dict(process_a.attributes or {})
    assert attributes["messaging.system"] == "rabbitmq"
    assert attributes["messaging.destination.name"] == tchu.settings.calls_exchange
    assert attributes["messaging.rabbitmq.destination.routing_key"] == "rpc.ta.get"
    assert attributes["messaging.consumer.group.name"] == "a"


def test_a_failed_call_marks_both_spans_as_errors(tchu: TchuFactory) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = Tracing(provider, settings=tchu.settings)
    registry = Registry()

    @registry.subscribe("rpc.tf.fail")
    def fail(data: Any) -> None:
        raise ValueError("no")

    tchu.worker(registry, middleware=[tracing.worker("f")])
    with pytest.raises(RemoteError):
        tchu.client(middleware=[tracing.client()]).call("rpc.tf.fail", None)
    _until(lambda: len(exporter.get_finished_spans()) == 2, "two spans")
    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert spans["process rpc.tf.fail"].status.status_code is StatusCode.ERROR
    assert spans["send rpc.tf.fail"].status.status_code is StatusCode.ERROR
    assert [e.name for e in spans["process rpc.tf.fail"].events] == ["exception"]


def test_tchu_rpc_imports_neither_opentelemetry_nor_prometheus() -> None:
    code = (
        "import sys, tchu_rpc, tchu_rpc.worker, tchu_rpc.client, tchu_rpc.cli, tchu_rpc.process;"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'opentelemetry', 'prometheus_client'}))"
    )
    argv = [sys.executable, "-c", code]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"
