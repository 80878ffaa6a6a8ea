"""What memory:// lacks for retries: delay queues whose messages move to the event queue when due.

On RabbitMQ a retry copy waits in a delay queue (`topology.retry_queue`) until its TTL is up, then
the broker dead-letters it into `<service>.events` through the default exchange. kombu's
`memory://` has neither TTL nor dead-lettering, so the copy would wait for ever. `DelayQueues` does
the broker's part, in a thread of its own: it takes each copy from the delay queues it watches and,
once `scale` times its wait has passed (`scale=0`: at once), publishes it unchanged to the
service's event queue through the default exchange, as the broker would. The worker is untouched.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from typing import Any

from kombu import Connection, Producer

from tchu_rpc import topology
from tchu_rpc._worker import retries
from tchu_rpc.log import get_logger
from tchu_rpc.registry import Registry

logger = get_logger(__name__)

#: How often the delay queues are looked at (memory:// has no consumer to wake a reader).
_POLL = 0.005


class DelayQueues:
    """Move due retry copies from services' delay queues to their event queues (memory:// only)."""

    def __init__(self, broker_url: str, scale: float = 0.0) -> None:
        self._conn = Connection(broker_url)
        self._channel = self._conn.channel()
        self._producer = Producer(self._channel)
        self._scale = scale
        self._watched: dict[str, str] = {}  # delay queue -> the event queue its copies go back to
        self._due: list[tuple[float, int, str, Any]] = []  # (when, order, event queue, message)
        self._order = itertools.count()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tchu-test-delays", daemon=True)
        self._thread.start()

    def watch(self, service: str, registry: Registry) -> None:
        """Watch the delay queues that the retry policies of `service`'s handlers can ask for."""
        with self._lock:
            for delay_ms in retries.delays(registry.handlers):
                self._watched[topology.retry_queue_name(service, delay_ms)] = f"{service}.events"

    def close(self) -> None:
        """Stop moving copies; those not moved yet stay where they are."""
        self._stop.set()
        self._thread.join(timeout=5)
        self._conn.release()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._take()
                wait = self._send_due()
            except Exception as exc:  # keep moving the others; say why this one stuck
                logger.exception("test_retry_delay_failed", error=str(exc))
                wait = _POLL
            self._stop.wait(wait)

    def _take(self) -> None:
        with self._lock:
            watched = list(self._watched.items())
        now = time.monotonic()
        for queue, events in watched:
            while (message := self._channel.basic_get(queue, no_ack=True)) is not None:
                when = now + self._scale * _wait(message)
                heapq.heappush(self._due, (when, next(self._order), events, message))

    def _send_due(self) -> float:
        now = time.monotonic()
        while self._due and self._due[0][0] <= now:
            _, _, events, message = heapq.heappop(self._due)
            props = message.properties
            self._producer.publish(
                message.body,
                exchange="",
                routing_key=events,
                headers=dict(message.headers or {}),
                content_type=message.content_type,
                content_encoding=message.content_encoding,
                message_id=props.get("message_id"),
                correlation_id=props.get("correlation_id"),
                reply_to=props.get("reply_to"),
                delivery_mode=props.get("delivery_mode") or 2,
                app_id=props.get("app_id"),  # with user_id, what marks the copy as the worker's own
                user_id=props.get("user_id"),
            )
        return min(_POLL, self._due[0][0] - now) if self._due else _POLL


def _wait(message: Any) -> float:
    """Return a copy's wait in seconds: its `expiration` (the worker sets one on every retry copy)."""
    try:
        return float(message.properties.get("expiration")) / 1000
    except (TypeError, ValueError):
        return 0.0
