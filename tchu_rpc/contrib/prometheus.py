"""Prometheus metrics for clients and workers, recorded by middleware (`pip install 'tchu-rpc[prometheus]'`).

```python
metrics = Metrics()                        # on prometheus_client's default registry, or registry=...
worker = Worker(queue="users", middleware=[metrics.worker("users")])
client = Client(middleware=[metrics.client()])
```

`tchu-rpc worker --metrics-port PORT` does this in every worker process and serves the sum of all
of them (prometheus_client's multiprocess mode). Labels: `service`, `kind` (call or event), `topic`
(the topic as sent: keep topics a fixed set of names), `outcome` (`ok`, or the error's type name).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from tchu_rpc import wire
from tchu_rpc.delivery import Delivery
from tchu_rpc.middleware import Middleware, OutgoingMessage

#: Seconds: from a millisecond handler or round trip to a long call.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """tchu_rpc's metric families on one registry; `worker()` and `client()` make what records them."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        on: dict[str, Any] = {"registry": registry}
        timed: dict[str, Any] = {"registry": registry, "buckets": BUCKETS}
        # A gauge of the live processes: a dead one's share goes (`process_died`).
        live: dict[str, Any] = {"registry": registry, "multiprocess_mode": "livesum"}
        handled = ("service", "kind", "topic")
        self.handled = Counter("tchu_rpc_handled", "Messages handled", (*handled, "outcome"), **on)
        self.redelivered = Counter("tchu_rpc_redelivered", "Deliveries delivered before", handled, **on)
        self.retried = Counter("tchu_rpc_retried", "Event handler runs that were retries", handled, **on)
        self.dead = Counter("tchu_rpc_dead_lettered", "Messages dead-lettered", (*handled, "reason"), **on)
        self.handler_seconds = Histogram("tchu_rpc_handler_seconds", "Handler run time", handled, **timed)
        self.handling = Gauge("tchu_rpc_handlers_running", "Handlers running", ("service", "kind"), **live)
        sent = ("kind", "topic", "outcome")
        self.sent = Counter("tchu_rpc_client_sent", "Calls and events sent, by outcome", sent, **on)
        waited = "A caller's wait for a call's answer"
        self.call_seconds = Histogram("tchu_rpc_client_call_seconds", waited, ("topic",), **timed)
        self.calling = Gauge("tchu_rpc_client_calls_in_flight", "Calls waiting for their answer", **live)

    def worker(self, service: str) -> Middleware:
        """Return the middleware that records `service`'s handling (give it to `Worker`)."""
        return WorkerMetrics(self, service)

    def client(self) -> Middleware:
        """Return the middleware that records a client's calls and events (give it to `Client`)."""
        return ClientMetrics(self)


class WorkerMetrics(Middleware):
    """Record a worker's handling: outcomes, run time, running handlers, redeliveries, retries, dead."""

    def __init__(self, metrics: Metrics, service: str) -> None:
        self._metrics, self._service = metrics, service
        self._started = threading.local()  # before_handler and after it run on the handler's thread
        # A label lookup takes a lock: each (kind, topic)'s children are looked up once.
        self._timers: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._outcomes: dict[tuple[str, str, str], Any] = {}

    def before_handler(self, delivery: Delivery) -> None:
        if delivery.redelivered:
            self._metrics.redelivered.labels(self._service, delivery.kind, delivery.topic).inc()
        if wire.HEADER_ATTEMPT in delivery.headers:
            self._metrics.retried.labels(self._service, delivery.kind, delivery.topic).inc()
        self._timer(delivery)[1].inc()
        self._started.at = time.perf_counter()

    def after_handler(self, delivery: Delivery, result: Any) -> None:
        self._ran(delivery, "ok")

    def on_error(self, delivery: Delivery, error: BaseException) -> None:
        self._ran(delivery, type(error).__name__)

    def on_dead_letter(self, delivery: Delivery | None, reason: str) -> None:
        kind, topic = ("", "") if delivery is None else (delivery.kind, delivery.topic)
        self._metrics.dead.labels(self._service, kind, topic, reason.split(":", 1)[0]).inc()

    def _timer(self, delivery: Delivery) -> tuple[Any, Any]:
        key = (delivery.kind, delivery.topic)
        found = self._timers.get(key)
        if found is None:
            m = self._metrics
            found = self._timers[key] = (
                m.handler_seconds.labels(self._service, *key),
                m.handling.labels(self._service, delivery.kind),
            )
        return found

    def _ran(self, delivery: Delivery, outcome: str) -> None:
        seconds, running = self._timer(delivery)
        seconds.observe(time.perf_counter() - self._started.at)
        running.dec()
        key = (delivery.kind, delivery.topic, outcome)
        counter = self._outcomes.get(key)
        if counter is None:
            counter = self._outcomes[key] = self._metrics.handled.labels(self._service, *key)
        counter.inc()


class ClientMetrics(Middleware):
    """Record a client's calls (outcome, wait, in flight) and events (confirmed or not)."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._sent: dict[int, float] = {}  # id(message) -> when its call was sent
        self._children: dict[tuple[str, str, str], tuple[Any, Any]] = {}  # looked up once each

    def before_publish(self, message: OutgoingMessage) -> None:
        if message.kind == "call":
            self._sent[id(message)] = time.perf_counter()
            self._metrics.calling.inc()

    def after_reply(self, message: OutgoingMessage, outcome: Any) -> None:
        said = type(outcome).__name__ if isinstance(outcome, BaseException) else "ok"
        key = (message.kind, message.topic, said)
        children = self._children.get(key)
        if children is None:
            m = self._metrics
            children = self._children[key] = (m.sent.labels(*key), m.call_seconds.labels(message.topic))
        children[0].inc()
        sent = self._sent.pop(id(message), None)
        if sent is not None:
            children[1].observe(time.perf_counter() - sent)
            self._metrics.calling.dec()


def serve_processes(port: int, directory: str) -> None:
    """Serve on `port` the sum of the metrics that processes write to `directory` (multiprocess mode).

    The processes must have `PROMETHEUS_MULTIPROC_DIR=directory` in their environment before they
    import prometheus_client.
    """
    from prometheus_client import multiprocess, start_http_server

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    start_http_server(port, registry=registry)


def process_died(pid: int, directory: str) -> None:
    """Drop a dead process's share of the gauges (what is running and in flight)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
