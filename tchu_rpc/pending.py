"""One call or publish in flight in a `Client`: its state, and how a caller waits for its outcome."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

from tchu_rpc.errors import CallTimeout

_GRACE = 5.0  # extra wait beyond a deadline before a caller stops trusting the I/O thread


@dataclass(slots=True)
class Pending:
    """A call or a publish the client has not settled yet."""

    future: futures.Future[Any]
    kind: str  # "call" or "event"
    topic: str
    body: bytes
    deadline: float  # time.monotonic(); progress from the handler moves it
    retry: bool  # publish again after a lost connection (events, idempotent calls)
    timeout: float = 0.0  # how far each progress report moves the deadline
    latest: float = math.inf  # the furthest progress may move the deadline (from max_timeout)
    on_progress: Callable[[Any], None] | None = None
    sent: bool = False
    started: float = field(default_factory=time.perf_counter)


def checked_timeout(timeout: float | None, default: float) -> float:
    """Return `timeout`, or `default` for None; refuse what is not a positive number of seconds."""
    if timeout is None:
        return default
    if not math.isfinite(timeout) or timeout <= 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    return timeout


def wait(pending: Pending, topic: str) -> Any:
    """Return the outcome of `pending` (or raise it) once settled; never wait past its deadline."""
    while True:
        # The deadline may move (progress), so wait in steps up to the deadline seen each time.
        try:
            return pending.future.result(max(0.0, pending.deadline - time.monotonic()) + _GRACE)
        except futures.TimeoutError:
            if pending.future.done():
                raise  # the call's own CallTimeout (a TimeoutError too), not a wait that ran out
            if time.monotonic() >= pending.deadline + _GRACE:
                raise CallTimeout(f"no answer for {topic!r}: the client's I/O thread is stuck") from None
