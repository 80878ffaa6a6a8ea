"""What a `Client` has in flight: each call or publish, their deadlines, how they settle, the wait."""

from __future__ import annotations

import heapq
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

from tchu_rpc._client.refusals import Refused
from tchu_rpc.errors import CallTimeout, TchuError
from tchu_rpc.log import get_logger

logger = get_logger(__name__)

_GRACE = 1.0  # extra wait beyond a deadline before a caller stops trusting the watchdog too
_RECENT = 4096  # settled ids remembered, to tell a duplicate reply from a stray one
_STALE_DEADLINES = 256  # deadlines of settled calls tolerated in the heap before it is rebuilt


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
    settled: bool = False  # read without a lock, where `future.done()` would take one
    envelope: Any = None  # what a typed call's reply decodes into (`wire.envelope_for`)
    error_type: Any = None  # what a typed call's error details are decoded into
    extra: dict[str, Any] | None = None  # AMQP headers of the caller's `headers=` and context
    refused: Refused | None = None  # how often the broker refused it (`_client.refusals`)
    started: float = field(default_factory=time.perf_counter)
    message_id: str = ""  # its key in `Inflight` (what `Inflight.cancel` drops)


class Inflight:
    """The calls and publishes a client has not settled, by message id, with a heap of deadlines.

    Callers add (`add`); the thread serving the connection settles (`settle`, `due`). A settled
    call's deadline stays in the heap until it is due, or until stale ones outnumber the live ones.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Pending] = {}
        self._deadlines: list[tuple[float, str]] = []
        self._recent: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._pending)

    def get(self, message_id: str) -> Pending | None:
        """Return what is in flight under `message_id`, if anything."""
        return self._pending.get(message_id)

    def items(self) -> list[tuple[str, Pending]]:
        """Return a snapshot of (message id, pending) pairs."""
        return list(self._pending.items())

    def add(self, message_id: str, pending: Pending) -> None:
        """Track `pending` until it is settled or its deadline passes."""
        self._pending[message_id] = pending
        self.postpone(message_id, pending, pending.deadline)

    def postpone(self, message_id: str, pending: Pending, deadline: float) -> None:
        """Move the deadline of `pending` to `deadline` (progress from its handler)."""
        pending.deadline = deadline
        with self._lock:
            heapq.heappush(self._deadlines, (deadline, message_id))

    def settle(self, message_id: str, outcome: Any, by: str | None = None) -> None:
        """Resolve the caller's future with `outcome` (an exception is raised to it); once only.

        `by` is the service that answered, if any: remembered to say who answered first when a
        second answer comes.
        """
        pending = self._pending.pop(message_id, None)
        if pending is None:
            return
        pending.settled = True
        said = type(outcome).__name__ if isinstance(outcome, TchuError) else "ok"
        self._recent[message_id] = said if by is None else f"{said} from {by}"
        if len(self._recent) > _RECENT:
            self._recent.popitem(last=False)
        if logger.enabled():
            logger.debug(
                "call_settled" if pending.kind == "call" else "publish_settled",
                topic=pending.topic,
                correlation_id=message_id,
                outcome=said,
                duration_ms=round((time.perf_counter() - pending.started) * 1000, 3),
            )
        try:
            if isinstance(outcome, BaseException):
                pending.future.set_exception(outcome)
            else:
                pending.future.set_result(outcome)
        except futures.InvalidStateError:
            pass  # the caller cancelled the future

    def cancel(self, message_id: str) -> bool:
        """Forget `message_id` unsettled (its caller gave up) and cancel its future; return whether it was.

        Not sent yet, it is never sent; a reply or confirm that comes later is dropped quietly.
        Any thread may cancel: the pop is atomic, so it and a `settle` never both take the entry.
        """
        pending = self._pending.pop(message_id, None)
        if pending is None:
            return False
        pending.settled = True
        self._recent[message_id] = "cancelled"
        pending.future.cancel()
        return True

    def outcome_of(self, message_id: str) -> str:
        """Say how a recently settled call ended (`ok`, an error's name, or `unknown`)."""
        return self._recent.get(message_id, "unknown")

    def next_deadline(self) -> float | None:
        """Return the earliest deadline in the heap (maybe of a call settled since), if any."""
        with self._lock:
            return self._deadlines[0][0] if self._deadlines else None

    def due(self, now: float) -> tuple[list[tuple[str, Pending]], float | None]:
        """Return what is past its deadline at `now`, and when the next deadline is."""
        with self._lock:
            if len(self._deadlines) > 2 * len(self._pending) + _STALE_DEADLINES:
                # Without this, the heap would hold every call of the last `timeout` seconds
                # (60,000 at 2,000 calls/s and 30 s).
                self._deadlines = [(p.deadline, m) for m, p in list(self._pending.items())]
                heapq.heapify(self._deadlines)
            deadlines = self._deadlines
            ids = []
            while deadlines and deadlines[0][0] <= now:
                ids.append(heapq.heappop(deadlines)[1])
            next_due = deadlines[0][0] if deadlines else None
        due = []
        for message_id in ids:
            pending = self._pending.get(message_id)
            if pending is not None and pending.deadline <= now:  # else progress moved it
                due.append((message_id, pending))
        return due, next_due


class Watchdog:
    """Settle what is past its deadline even while the thread serving the connection is blocked.

    The thread serving the connection expires calls on time; it may block, though (a broker that
    stops answering during a reconnection, a name lookup), so this thread looks too, `MARGIN`
    after each deadline, and settles what is still pending then. It sleeps while nothing is due.
    """

    #: How long after a deadline the watchdog looks: the latest a future fails past its deadline.
    MARGIN = 0.05

    def __init__(self, name: str, inflight: Inflight, expire: Callable[[float], object]) -> None:
        self._name = name
        self._inflight = inflight
        self._expire = expire
        self._wake = threading.Event()
        self._until = math.inf  # when it looks next; math.inf while it is not sure
        self._closed = False
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def watch(self, deadline: float) -> None:
        """Make sure the watchdog looks by `deadline` + `MARGIN`."""
        if deadline + self.MARGIN >= self._until:
            return
        if self._thread is None:
            with self._lock:
                if self._thread is None and not self._closed:
                    self._thread = threading.Thread(target=self._serve, name=self._name, daemon=True)
                    self._thread.start()
        self._wake.set()

    def close(self) -> None:
        """Stop the thread."""
        self._closed = True
        self._wake.set()

    def _serve(self) -> None:
        while not self._closed:
            self._until = math.inf  # first: a deadline added while it looks wakes it (`watch`)
            due = self._inflight.next_deadline()
            if due is not None:
                self._until = due + self.MARGIN
            wait = None if due is None else max(0.0, self._until - time.monotonic())
            if self._wake.wait(wait):
                self._wake.clear()
                continue
            self._expire(time.monotonic())


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
