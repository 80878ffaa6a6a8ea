"""The transactional outbox: write an event with the change it reports; a relay publishes it later.

`write(topic, data)` inserts an `OutboxEvent` row in the caller's transaction: the event exists if
and only if the change committed, and saving never waits for the broker. A `Relay` (run by
`manage.py tchu_rpc_outbox`, or `manage.py tchu_rpc_worker --outbox`) sends the rows:

1. It claims a batch in a short transaction: unsent rows not claimed by a live relay, oldest first,
   locked with `SELECT ... FOR UPDATE SKIP LOCKED` (PostgreSQL, MySQL 8+, MariaDB 10.6+), so that
   relays running at once take different rows; each claimed row gets `claimed_until` (a lease) and
   `attempts + 1`. A row whose topic has an older unsent row held by another relay is left for
   later, so that each topic's rows go out in row order (`id`).
2. It publishes the claimed rows one by one, each confirmed by the broker (publisher confirms),
   with the headers `x-tchu-outbox-id` (the row's `message_id`) and `x-tchu-outbox-attempt`.
3. It marks them sent (`sent_at`). Rows sent more than `keep` seconds ago are deleted.

At least once: a relay that dies between publish and mark leaves its rows claimed; once their lease
has passed, another relay sends them again with `x-tchu-outbox-attempt` above 1 (a possible
duplicate: consumers de-duplicate by `x-tchu-outbox-id`). In normal operation (no relay stopped
for longer than its lease in the middle of a batch) no row is sent twice.

SQLite has no row locks: a relay takes the database's write lock before it reads (an empty
`UPDATE`), so relays claim one after another, which is correct but serializes them with every writer.
"""

from __future__ import annotations

import datetime
import math
import threading
from collections.abc import Callable
from typing import Any, Final

import msgspec
from django.db import connections, transaction
from django.db.models import F, Min, Q, QuerySet
from django.utils import timezone

from tchu_rpc.client import Client
from tchu_rpc.django.models import OutboxEvent
from tchu_rpc.errors import TchuError
from tchu_rpc.log import get_logger

logger = get_logger(__name__)

HEADER_ID: Final = "x-tchu-outbox-id"
HEADER_ATTEMPT: Final = "x-tchu-outbox-attempt"


def write(topic: str, data: Any, *, using: str | None = None) -> OutboxEvent:
    """Insert the event `topic` with `data` into the outbox, in the current transaction on `using`."""
    plain = msgspec.to_builtins(data)  # a Struct, a date...: the JSON a publish would send
    row: OutboxEvent = OutboxEvent.objects.using(using).create(topic=topic, data=plain)
    return row


class Relay:
    """Send the outbox's rows on `using` with `client`, oldest first; see the module's notes.

    Args:
        client: publishes each row (and owns its connection; the relay does not close it).
        using: the database alias whose outbox this relay sends.
        batch: rows claimed at a time.
        lease: seconds a claim holds; a batch stops early once half of it has passed.
        keep: seconds a sent row is kept before it is deleted.
    """

    def __init__(
        self,
        client: Client,
        *,
        using: str = "default",
        batch: int = 100,
        lease: float = 60.0,
        keep: float = 3600.0,
        clock: Callable[[], datetime.datetime] = timezone.now,
    ) -> None:
        self.client = client
        self.using = using
        self.batch = batch
        self.lease = datetime.timedelta(seconds=lease)
        self.keep = datetime.timedelta(seconds=keep)
        self._now = clock

    def run(self, stop: threading.Event, interval: float = 0.5) -> None:
        """Send until `stop` is set, waiting `interval` seconds whenever nothing is left to send."""
        logger.info("outbox_relay_started", using=self.using, batch=self.batch)
        while not stop.is_set():
            try:
                sent = self.run_once()
                self.prune()
            except Exception as exc:  # the database or the broker is away: try again later
                logger.error("outbox_relay_failed", error_type=type(exc).__name__, error=str(exc))
                connections[self.using].close_if_unusable_or_obsolete()
                sent = 0
            if not sent:
                stop.wait(interval)
        logger.info("outbox_relay_stopped", using=self.using)

    def run_once(self) -> int:
        """Claim a batch, publish it and mark it sent; return how many rows were sent."""
        rows = self.claim()
        started = self._now()
        sent: list[int] = []
        tried: set[int] = set()
        try:
            for row in rows:
                if self._now() - started > self.lease / 2:
                    break  # the rest of the claim would lapse: released for the next batch
                tried.add(row.id)
                headers = {HEADER_ID: str(row.message_id), HEADER_ATTEMPT: row.attempts}
                self.client.publish(row.topic, row.data, headers=headers, allow_call_topic=True)
                sent.append(row.id)
        except TchuError as exc:  # this row may have reached the broker: its next attempt says so
            logger.warning("outbox_publish_failed", error_type=type(exc).__name__, error=str(exc))
        finally:
            self._settle(sent, tried - set(sent), [row.id for row in rows if row.id not in tried])
        if sent:
            logger.debug("outbox_sent", using=self.using, rows=len(sent))
        return len(sent)

    def claim(self) -> list[OutboxEvent]:
        """Claim the next batch of rows this relay may send (see the module's notes)."""
        now = self._now()
        with transaction.atomic(using=self.using):
            _write_lock_if_sqlite(self.using)
            candidates = list(_locked(_free(self._table(), now), self.using).order_by("id")[: self.batch])
            rows = _in_topic_order(self._table(), candidates)
            claim = {"claimed_until": now + self.lease, "attempts": F("attempts") + 1}
            self._table().filter(id__in=[row.id for row in rows]).update(**claim)
        for row in rows:
            row.attempts += 1
        return rows

    def prune(self) -> int:
        """Delete rows sent more than `keep` ago; return how many."""
        deleted, _ = self._table().filter(sent_at__lt=self._now() - self.keep).delete()
        return int(deleted)

    def _settle(self, sent: list[int], failed: set[int], untried: list[int]) -> None:
        """Mark `sent` rows sent; release the others at once, not after the lease."""
        table = self._table()
        if sent:
            table.filter(id__in=sent).update(sent_at=self._now(), claimed_until=None)
        if failed:  # may have reached the broker: its attempt stays counted
            table.filter(id__in=failed).update(claimed_until=None)
        if untried:
            table.filter(id__in=untried).update(claimed_until=None, attempts=F("attempts") - 1)

    def _table(self) -> QuerySet[OutboxEvent]:
        return OutboxEvent.objects.using(self.using)


def _free(table: QuerySet[OutboxEvent], now: datetime.datetime) -> QuerySet[OutboxEvent]:
    unclaimed = Q(claimed_until__isnull=True) | Q(claimed_until__lt=now)
    return table.filter(unclaimed, sent_at__isnull=True)


def _locked(rows: QuerySet[OutboxEvent], using: str) -> QuerySet[OutboxEvent]:
    features = connections[using].features
    if features.has_select_for_update_skip_locked:
        return rows.select_for_update(skip_locked=True)
    if features.has_select_for_update:
        return rows.select_for_update()  # relays wait for each other's claims
    return rows


def _write_lock_if_sqlite(using: str) -> None:
    if connections[using].vendor == "sqlite":
        # An UPDATE takes SQLite's write lock: from here to commit no other relay can claim.
        OutboxEvent.objects.using(using).filter(id=-1).update(attempts=0)


def _in_topic_order(table: QuerySet[OutboxEvent], candidates: list[OutboxEvent]) -> list[OutboxEvent]:
    """Keep the candidates no older unsent row of their topic precedes outside the batch."""
    ids = {row.id for row in candidates}
    topics = {row.topic for row in candidates}
    held = (
        table.filter(sent_at__isnull=True, topic__in=topics)
        .exclude(id__in=ids)
        .values("topic")
        .annotate(first=Min("id"))
        .values_list("topic", "first")
    )
    first_elsewhere: dict[str, float] = {topic: first for topic, first in held}
    return [row for row in candidates if row.id < first_elsewhere.get(row.topic, math.inf)]


def serve(stop: threading.Event, *, using: str = "default", batch: int = 100, interval: float = 0.5) -> None:
    """Run a relay on its own client (from `settings_from_django()`) until `stop` is set."""
    from tchu_rpc.django.conf import settings_from_django

    with Client(settings=settings_from_django()) as client:
        Relay(client, using=using, batch=batch).run(stop, interval)


def serving(using: str = "default") -> Callable[[], None]:
    """Start `serve` on a thread; return the function that stops it and waits for it."""
    stop = threading.Event()
    thread = threading.Thread(
        target=serve, args=(stop,), kwargs={"using": using}, name="tchu-outbox", daemon=True
    )
    thread.start()

    def stopped() -> None:
        stop.set()
        thread.join(timeout=30)

    return stopped
