"""Call time limits: which running call handlers outran `handler_time_limit`, and a start-up check.

A Python thread cannot be killed. When a call handler runs past the limit, the worker answers the
caller with `HandlerTimeLimit` and acks the request (so the broker's `consumer_timeout` never closes
the channel and redelivers it), gives the handler's lane a fresh thread, and discards the result the
old thread returns later. The old thread runs on until its handler returns.
"""

from __future__ import annotations

from typing import Any

from tchu_rpc.config import Settings
from tchu_rpc.log import get_logger

logger = get_logger(__name__)


class TimeLimits:
    """Track when call handlers started and tell which ran too long; used on the I/O thread only.

    Every deadline is a start plus the one `limit`, and starts come in time order, so the running
    jobs in insertion order are in deadline order: no heap, and a finished job is forgotten at
    once (a heap with lazy deletion would keep every call finished behind one long handler).
    """

    def __init__(self, limit: float | None) -> None:
        self.limit = limit
        self._running: dict[Any, float] = {}  # job -> deadline, earliest first

    def start(self, job: Any, started: float) -> None:
        """Note that `job`'s handler started at `started` (`time.monotonic()`, never decreasing)."""
        if self.limit is None:
            return
        self._running[job] = started + self.limit

    def finish(self, job: Any) -> None:
        """Note that `job`'s handler returned (or that the job was settled otherwise)."""
        self._running.pop(job, None)

    def expired(self, now: float) -> tuple[list[Any], float | None]:
        """Return the jobs past their deadline (no longer tracked) and the next deadline, if any."""
        running = self._running
        due: list[Any] = []
        if not running:
            return due, None  # nothing running: every turn of an idle loop
        next_due = None
        for job, deadline in running.items():
            if deadline > now:
                next_due = deadline
                break
            due.append(job)
        for job in due:
            del running[job]
        return due, next_due

    def clear(self) -> None:
        """Forget every job (their connection is gone: the broker redelivers their messages)."""
        self._running.clear()


def check_consumer_timeout(settings: Settings, service: str) -> bool:
    """Warn when a call handler may outlive the broker's consumer timeout; return whether it may.

    The broker closes the channel of a delivery left unacked past its `consumer_timeout`, and the
    request is redelivered: the handler runs again, and keeps doing so up to `delivery_limit`.
    """
    limit, broker = settings.handler_time_limit, settings.broker_consumer_timeout
    if broker is None or (limit is not None and limit < broker):
        return False
    logger.warning(
        "consumer_timeout_exceeded",
        service=service,
        handler_time_limit=limit,
        broker_consumer_timeout=broker,
        hint="a call handler running longer than the broker's consumer_timeout gets its channel closed "
        "and its request redelivered; set handler_time_limit below broker_consumer_timeout",
    )
    return True
