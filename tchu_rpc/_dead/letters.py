"""Read a dead letter (topic, kind, reason, attempts, age) and make its copy for a replay.

No I/O here: `tchu_rpc._dead.queue` gets the messages and moves them.

What a dead letter holds is the worker's copy (`_worker.outgoing.copy`): the original body and
properties, the topic in `x-tchu-topic`, the reason in `x-tchu-error` and whether it was a call or
an event in `x-tchu-kind` (inferred for letters of workers before it, `kind_of`).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Final

from tchu_rpc import wire
from tchu_rpc._worker.outgoing import carried, encodable
from tchu_rpc._worker.retries import strip_stale
from tchu_rpc.topics import Kind, default_kind

#: How often a message was replayed from a dead-letter queue (on the replayed copy).
HEADER_REPLAYED: Final = "x-tchu-replayed"
#: Headers a replayed copy leaves behind, besides the original delivery's counts and the broker's
#: dead-lettering history (`retries.strip_stale`): with the old delivery count the worker would
#: dead-letter it again at once for its delivery limit, and with the old attempt a retried handler
#: would get no more retries. A call's time left belonged to a caller who has gone, and the worker
#: would drop a call whose time ran out without running it. The retried handler's name
#: (`HEADER_RETRY_HANDLER`) stays: a replay runs that handler alone, as its retries did.
_DROPPED: Final = (
    wire.HEADER_ERROR,
    wire.HEADER_KIND,
    wire.HEADER_TIMEOUT,
    wire.HEADER_ATTEMPT,
    wire.HEADER_ATTEMPT_ERRORS,
)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One message in a service's dead-letter queue, as `tchu-rpc dead` shows it."""

    #: The topic it was published with ("" when the letter does not say).
    topic: str
    kind: Kind
    #: Why it was dead-lettered (the worker's `x-tchu-error`).
    reason: str
    #: How often it was tried: the service's queue delivered it (as the worker counts on a classic
    #: queue, counting the delivery that dead-lettered it), or a retrying handler ran it, whichever
    #: is more. 1: it failed at once, or the count is unknown (a quorum queue's count is not kept).
    attempts: int
    #: How often it was replayed before.
    replays: int
    #: Seconds since it was dead-lettered, from its `timestamp` property; None when it has none.
    age: float | None
    message_id: str | None
    correlation_id: str | None
    #: A worker wrote it (`app_id` is `wire.COPY_APP_ID`): only such letters are replayed, since
    #: their topic and counts are the worker's word, not a publisher's (letters of earlier versions
    #: say nothing, and stay until moved by hand).
    ours: bool = True


def read(message: Any, lanes: Collection[Kind], now: float) -> DeadLetter:
    """Describe a dead letter got from the queue; `lanes` are the kinds the service has queues for."""
    props = message.properties
    headers = props.get("application_headers") or {}
    topic = headers.get(wire.HEADER_TOPIC)
    topic = topic if isinstance(topic, str) else ""
    timestamp = props.get("timestamp")
    # The worker's count. Not the broker's `x-delivery-count`: on a quorum dead-letter queue it counts
    # how often the letter was read there, by listings too, in place of the count it came with.
    earlier = _count(headers.get(wire.HEADER_DELIVERIES))
    runs = headers.get(wire.HEADER_ATTEMPT_ERRORS)  # a retried handler's errors, one per run
    return DeadLetter(
        topic=topic,
        kind=kind_of(headers, props, topic, lanes),
        reason=str(headers.get(wire.HEADER_ERROR, "")),
        attempts=max(earlier + 1, len(runs) if isinstance(runs, list) else 0),
        replays=_count(headers.get(HEADER_REPLAYED)),
        age=max(now - timestamp, 0.0) if _is_count(timestamp) else None,
        message_id=props.get("message_id"),
        correlation_id=props.get("correlation_id"),
        ours=props.get("app_id") == wire.COPY_APP_ID,
    )


def kind_of(headers: dict[str, Any], props: dict[str, Any], topic: str, lanes: Collection[Kind]) -> Kind:
    """Tell whether a dead letter was a call or an event.

    The worker says so in `x-tchu-kind`. A service with one queue has one kind. Otherwise (a letter
    of a worker before that header) a message that names a reply address or
    carries the caller's time left is a call (a `Client` sets both on every call, on no event), and
    one with neither goes by the registry's convention: topics whose first word is `rpc` are calls.
    """
    said = headers.get(wire.HEADER_KIND)
    if said in ("call", "event"):
        return "call" if said == "call" else "event"
    if len(set(lanes)) == 1:
        return next(iter(lanes))
    if props.get("reply_to") or wire.HEADER_TIMEOUT in headers:
        return "call"
    return default_kind(topic)


def replay_copy(message: Any) -> tuple[bytes, dict[str, Any]]:
    """Return the body and properties of the copy a replay publishes for a dead letter.

    The same body and properties, persistent and without an expiration (a replay must not vanish
    unrun); the headers a copy carries (`outgoing.carried`: never `CC` or `BCC`) less what belonged
    to its earlier runs (`_DROPPED`), with the replay counted in `x-tchu-replayed`. The topic stays
    in `x-tchu-topic`, which the worker trusts on a copy marked as its own (`app_id`, and `user_id`
    = the worker's login: `DeadQueue` publishes with its own login, so a replay must log in as the
    service does, or the worker dead-letters the copy again as `UntrustedCopy`).
    """
    props = dict(message.properties)
    ours = props.get("app_id") == wire.COPY_APP_ID  # a worker's dead letter, not a publisher's message
    headers = carried(props.pop("application_headers", None), trusted=ours)
    replays = _count(headers.get(HEADER_REPLAYED))
    strip_stale(headers)
    for name in _DROPPED:
        headers.pop(name, None)
    headers[HEADER_REPLAYED] = replays + 1
    props.pop("expiration", None)
    props.update(delivery_mode=2, application_headers=encodable(headers), app_id=wire.COPY_APP_ID)
    return bytes(message.body), props


def _count(value: Any) -> int:
    return int(value) if _is_count(value) else 0


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
