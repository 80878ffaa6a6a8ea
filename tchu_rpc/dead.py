"""Dead letters you can act on: list a service's dead-letter queue, replay its letters once each.

`tchu-rpc dead SERVICE [--replay]` is a shell over `list_dead_letters` and `replay_dead_letters`.
A replay moves each letter back to the service's own queue (`<service>.calls` or `.events`) by the
default exchange, so the worker takes its topic from `x-tchu-topic`, and moves it exactly once: its
copy's publish and its ack are one AMQP transaction (see `tchu_rpc._dead.queue`). Calls stay where
they are unless asked for (`calls=True`): each was answered with an error or its caller timed out,
so a replayed call runs its handler for its side effects only, and its answer goes nowhere.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Collection, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from tchu_rpc._dead.letters import HEADER_REPLAYED, DeadLetter, read, replay_copy
from tchu_rpc._dead.queue import DeadQueue
from tchu_rpc.config import Settings
from tchu_rpc.errors import ConfigError
from tchu_rpc.log import get_logger
from tchu_rpc.topics import Kind, topic_matches, validate_pattern

logger = get_logger(__name__)

__all__ = [
    "HEADER_REPLAYED",
    "DeadLetter",
    "Listing",
    "Replay",
    "format_listing",
    "format_replay",
    "list_dead_letters",
    "replay_dead_letters",
    "run",
]

#: How many letters a listing shows unless told otherwise.
DEFAULT_LIST_LIMIT: Final = 50
_REASON_WIDTH: Final = 60
#: Why a replay left a letter where it was, as `format_replay` says it.
_SKIPPED: Final = {
    "call": "calls (add --calls to replay them)",
    "topic": "not matching the topic pattern",
    "no topic": "without an x-tchu-topic header",
    "no queue": "for a queue the service does not have",
}


@dataclass(frozen=True, slots=True)
class Listing:
    """What a listing saw: the queue, how many letters it holds, and the first of them."""

    queue: str
    depth: int
    letters: tuple[DeadLetter, ...]


@dataclass(frozen=True, slots=True)
class Replay:
    """What a replay did: letters moved, letters left, and why some it looked at were left."""

    queue: str
    replayed: int
    #: Of the letters in the queue when the replay began, how many it left there.
    remaining: int
    skipped: dict[str, int] = field(default_factory=dict)


def list_dead_letters(
    service: str,
    settings: Settings | None = None,
    *,
    topic: str | None = None,
    limit: int = DEFAULT_LIST_LIMIT,
) -> Listing:
    """Return the first `limit` letters in `<service>.dead` (whose topic matches `topic`), leaving all.

    Every letter goes once through the queue, read or not: moved to its end as it is, in order, so
    that the queue ends as it was, and none is given back (which a quorum queue would count as a
    delivery, up to its delivery limit: `tchu_rpc._dead.queue`).

    Raises:
        ConfigError: the service has no dead-letter queue, or `limit` is below 1.
        TopicError: `topic` is not a valid binding pattern.
    """
    pattern = _pattern(topic)
    _check_limit(limit)
    letters: list[DeadLetter] = []
    with DeadQueue(service, settings or Settings.from_env()) as queue:
        depth, lanes, now = queue.depth(), queue.lanes(), time.time()
        for message in _scan(queue, depth):
            if len(letters) < limit:
                letter = read(message, lanes, now)
                if pattern is None or topic_matches(pattern, letter.topic):
                    letters.append(letter)
            queue.keep(message)
        queue.release()
    return Listing(queue.name, depth, tuple(letters))


def replay_dead_letters(
    service: str,
    settings: Settings | None = None,
    *,
    topic: str | None = None,
    limit: int | None = None,
    calls: bool = False,
) -> Replay:
    """Move letters from `<service>.dead` back to the service's queues, each exactly once.

    Only the letters there at the start are looked at, in queue order: one that fails again comes
    back at the end and waits for the next replay; those left go through the queue as a listing's
    do. `topic` (a binding pattern) and `limit` select which are moved; calls are moved only with
    `calls`. The copy keeps the letter's body, properties and headers, less its reason, delivery
    counts and a call's time left, with `x-tchu-replayed` counting its replays.

    Raises:
        ConfigError: the service has no dead-letter queue, or `limit` is below 1.
        TopicError: `topic` is not a valid binding pattern.
        PublishFailed: the broker refused a move (that letter and those after it stay).
    """
    pattern = _pattern(topic)
    if limit is not None:
        _check_limit(limit)
    replayed, skipped = 0, Counter[str]()
    with DeadQueue(service, settings or Settings.from_env()) as queue:
        depth, lanes, now = queue.depth(), queue.lanes(), time.time()
        for message in _scan(queue, depth):
            if replayed == limit:
                queue.keep(message)  # through the queue all the same, so that it ends in its order
                continue
            letter = read(message, lanes, now)
            why = _left_because(letter, pattern, calls, lanes)
            if why is not None:
                skipped[why] += 1
                queue.keep(message)
                continue
            queue.move(message, letter.kind, *replay_copy(message))
            replayed += 1
        queue.release()
    logger.info("dead_letters_replayed", queue=queue.name, replayed=replayed, skipped=dict(skipped))
    return Replay(queue.name, replayed, depth - replayed, dict(skipped))


def _scan(queue: DeadQueue, depth: int) -> Iterator[Any]:
    # No more than the letters there at the start: a replayed letter that fails again comes back at
    # the end of the queue, and must not go round again in the same run.
    for _ in range(depth):
        message = queue.get()
        if message is None:
            return
        yield message


def _left_because(
    letter: DeadLetter, pattern: str | None, calls: bool, lanes: Collection[Kind]
) -> str | None:
    if not letter.ours:
        return "not a worker's letter"  # published into the queue by someone else: its topic is a claim
    if not letter.topic:
        return "no topic"  # the worker would see the queue's name as its topic
    if pattern is not None and not topic_matches(pattern, letter.topic):
        return "topic"
    if letter.kind == "call" and not calls:
        return "call"
    if letter.kind not in lanes:
        return "no queue"
    return None


def _pattern(topic: str | None) -> str | None:
    return None if topic is None else validate_pattern(topic)


def _check_limit(limit: int) -> None:
    if limit < 1:
        raise ConfigError(f"limit must be at least 1, got {limit!r}")


def format_listing(listing: Listing) -> str:
    """Return a listing as a table: topic, kind, attempts, replays, age, reason (shortened)."""
    if not listing.letters:
        return f"{listing.queue}: {listing.depth} in the queue, none shown"
    rows = [("TOPIC", "KIND", "ATTEMPTS", "REPLAYS", "AGE", "REASON")]
    rows += [
        (
            letter.topic or "?",
            letter.kind,
            str(letter.attempts),
            str(letter.replays),
            _age(letter.age),
            _shortened(letter.reason),
        )
        for letter in listing.letters
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = ["  ".join([*(row[i].ljust(widths[i]) for i in range(5)), row[5]]) for row in rows]
    shown = len(listing.letters)
    return "\n".join([f"{listing.queue}: {listing.depth} in the queue, {shown} shown", *lines])


def format_replay(replay: Replay) -> str:
    """Return what a replay did in one sentence."""
    total = replay.replayed + replay.remaining
    text = f"replayed {replay.replayed} of the {total} letters in {replay.queue}"
    if replay.skipped:
        parts = [f"{count} {_SKIPPED.get(why, why)}" for why, count in sorted(replay.skipped.items())]
        text += f" (not replayed: {'; '.join(parts)})"
    return text


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _shortened(reason: str) -> str:
    reason = " ".join(reason.split())  # one line per letter
    return reason if len(reason) <= _REASON_WIDTH else reason[: _REASON_WIDTH - 3] + "..."


def run(
    service: str,
    settings: Settings,
    *,
    replay: bool = False,
    topic: str | None = None,
    limit: int | None = None,
    calls: bool = False,
    as_json: bool = False,
) -> int:
    """List (or with `replay`, replay) a service's dead letters and print what was done; return 0."""
    if replay:
        done = replay_dead_letters(service, settings, topic=topic, limit=limit, calls=calls)
        print(json.dumps(asdict(done)) if as_json else format_replay(done))
        return 0
    listing = list_dead_letters(
        service, settings, topic=topic, limit=DEFAULT_LIST_LIMIT if limit is None else limit
    )
    print(json.dumps(asdict(listing)) if as_json else format_listing(listing))
    return 0
