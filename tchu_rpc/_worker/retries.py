"""Retries of failed event handlers: which handler a retry runs, when, and what its copy carries.

How a retry goes (the policy is `tchu_rpc.Retry`, given per handler to `subscribe`):

- An event handler with a `Retry` raises one of its `on` exceptions and has runs left: the event is
  not dead-lettered for it. The worker publishes a copy of the event to a delay queue of its service
  (`topology.retry_queue`) and acks the original in the same settle step: on the events channel,
  which confirms, the ack waits for the copy's confirm (`settle`). Nothing waits in the worker, so a
  waiting retry holds no prefetch slot and no thread.
- The broker keeps the copy for its delay, then dead-letters it into `<service>.events` through the
  default exchange, where any worker of the service takes it. The copy is persistent and the delay
  queue durable: a retry survives a worker restart (its time counts on while no worker runs; one
  that came due meanwhile waits in the event queue) and a broker restart. A quorum delay queue
  dead-letters at least once; a classic one, like RabbitMQ's dead-lettering generally, at most once.
- Only that handler runs again. The copy names it (`wire.HEADER_RETRY_HANDLER`, `name@pattern`, with
  `#n` for the n-th of several same-named handlers of one pattern), says which run it is
  (`HEADER_ATTEMPT`, 2 for the first retry) and lists every earlier run's error
  (`HEADER_ATTEMPT_ERRORS`). These headers count only on a message that came by the default exchange
  (`messages.republished`), which a dead-lettered copy does; siblings that handled the event are
  not run again. Several handlers failing on one event get a copy each.
- Delays: a message's own TTL expires only at the head of its queue, so one queue of mixed delays
  would hold a short retry behind a long one. Retry `n` of a policy waits in the queue of its
  longest delay, `Retry.delay(n)` in milliseconds (`x-message-ttl`), and the copy's `expiration` is
  the drawn (jittered) wait. Every copy ahead of it in that queue leaves by `delay(n)` after it was
  queued, at the latest: a retry waits at least its drawn wait and at most `delay(n)`, never longer.
  The service declares one queue per delay its handlers' policies can ask for.
- After the last run, or on an exception not in `on`, the event is dead-lettered as without retries;
  after a retry's run, `x-tchu-error` names the handler and every run's error, and the dead copy
  keeps `HEADER_ATTEMPT_ERRORS` with all of them (each cut to `_ERROR_CHARS`).

Retries need RabbitMQ: a kombu virtual transport (`memory://`) has no TTL nor dead-lettering, and
there a retry copy stays in its delay queue.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

from tchu_rpc import wire
from tchu_rpc.registry import Handler

#: How much of one run's error a retry copy and the dead copy keep (100 runs: 30 kB of headers).
_ERROR_CHARS: Final = 300
#: Room for all runs' errors in `x-tchu-error` (`Settler.dead_letter` keeps 1,000 characters).
_REASON_CHARS: Final = 1000
#: Headers of the original that a retry copy drops: its copy is a new message for the broker to
#: count (a stale quorum count would reach the event queue unchanged), and the broker writes its
#: own dead-lettering history again.
_STALE: Final = (
    wire.HEADER_DELIVERIES,
    wire.HEADER_QUORUM_COUNT,
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
)


@dataclass(frozen=True, slots=True)
class Attempt:
    """Which run of a handler a delivery is, and the errors of the runs before it."""

    number: int = 1
    errors: tuple[str, ...] = ()


FIRST: Final = Attempt()


@dataclass(frozen=True, slots=True)
class Rescheduled:
    """A failed handler's next run: a copy of its event to park in a delay queue."""

    handler: str  # its key (`key_of`)
    attempt: int  # the run the copy is for: 2 for the first retry
    wait: float  # seconds: the copy's own expiration (jittered)
    queue_ms: int  # the delay queue's TTL: the longest the copy can wait
    errors: tuple[str, ...]  # the errors of runs 1 .. attempt - 1

    def headers(self) -> dict[str, Any]:
        """Return the headers that make the copy a retry of this handler alone."""
        return {
            wire.HEADER_RETRY_HANDLER: self.handler,
            wire.HEADER_ATTEMPT: self.attempt,
            wire.HEADER_ATTEMPT_ERRORS: list(self.errors),
        }


class Catching:
    """Wrap a handler's function to keep the exception it raises (`retry.on` is matched on it)."""

    __slots__ = ("error", "fn")

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.error: Exception | None = None

    def __call__(self, data: Any) -> Any:
        try:
            return self.fn(data)
        except Exception as exc:
            self.error = exc
            raise


def key_of(handler: Handler, handlers: tuple[Handler, ...]) -> str:
    """Return the name a retry copy gives `handler`, one of the handlers its event matched."""
    key = f"{handler.name}@{handler.pattern}"
    twins = [h for h in handlers if h.name == handler.name and h.pattern == handler.pattern]
    position = next((i for i, h in enumerate(twins) if h is handler), 0)
    return f"{key}#{position}" if position else key


def find(handlers: tuple[Handler, ...], key: Any) -> Handler | None:
    """Return the handler of `handlers` that a retry copy names `key`, if this service still has it."""
    return next((h for h in handlers if key_of(h, handlers) == key), None)


def attempt_of(headers: dict[str, Any]) -> Attempt:
    """Return the run a retry copy is for, from its (trusted) headers."""
    raw = headers.get(wire.HEADER_ATTEMPT_ERRORS)
    errors = tuple(str(e) for e in raw) if isinstance(raw, list | tuple) else ()
    number = headers.get(wire.HEADER_ATTEMPT)
    if isinstance(number, bool) or not isinstance(number, int) or number < 2:
        number = len(errors) + 1
    return Attempt(number, errors)


def error_text(info: wire.ErrorInfo) -> str:
    """Return how a run's error is listed: its type and message, cut to `_ERROR_CHARS`."""
    return f"{info.type}: {info.message}"[:_ERROR_CHARS]


def reschedule(
    handler: Handler,
    key: str,
    exc: BaseException,
    error: str,
    attempt: Attempt,
    rng: Callable[[], float] = random.random,
) -> Rescheduled | None:
    """Return the next run of `handler` after run `attempt` failed with `exc`, or None if it ends here."""
    policy = handler.retry
    if policy is None or attempt.number >= policy.attempts or not policy.retries(exc):
        return None
    retry = attempt.number  # retry n follows run n
    wait, queue_ms = policy.draw(retry, rng), delay_ms(policy.delay(retry))
    return Rescheduled(key, attempt.number + 1, wait, queue_ms, (*attempt.errors, error))


def given_up(key: str, errors: tuple[str, ...]) -> tuple[str, dict[str, Any]]:
    """Return the dead-letter reason and headers of a retried handler's last failed run."""
    prefix = f"handler failed after {len(errors)} attempts: {key}: "
    # Each run's share of the room, less its "n) " and "; ": every run shows, up to ~40 runs.
    room = max(16, (_REASON_CHARS - len(prefix)) // len(errors) - 7)
    runs = "; ".join(f"{n}) {error[:room]}" for n, error in enumerate(errors, 1))
    return prefix + runs, {wire.HEADER_ATTEMPT_ERRORS: list(errors)}


def delay_ms(seconds: float) -> int:
    """Return a delay in whole milliseconds (RabbitMQ's TTL unit), at least 1."""
    return max(1, round(seconds * 1000))


def delays(handlers: Iterable[Handler]) -> list[int]:
    """Return the delays (ms) of the delay queues that `handlers`' retry policies can ask for."""
    found: set[int] = set()
    for handler in handlers:
        policy = handler.retry
        if handler.kind == "event" and policy is not None:
            found.update(delay_ms(policy.delay(n)) for n in range(1, policy.attempts))
    return sorted(found)


def strip_stale(headers: dict[str, Any]) -> None:
    """Drop from a retry copy's headers what belongs to the original delivery (see `_STALE`)."""
    for name in _STALE:
        headers.pop(name, None)
