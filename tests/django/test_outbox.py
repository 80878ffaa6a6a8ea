"""The transactional outbox: saves never wait for the broker; relays send every row, in order, once."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from conftest import ALL_ALIASES, PROJECT
from django.db import connections, transaction
from django.test import override_settings
from django.utils import timezone
from shop.models import Order

from tchu_rpc import Registry, current_delivery
from tchu_rpc.django import close_client
from tchu_rpc.django.models import OutboxEvent
from tchu_rpc.django.outbox import HEADER_ATTEMPT, HEADER_ID, Relay
from tchu_rpc.testing import TchuFactory

SAVES = 1000
WAIT = 30.0


class Collector:
    """Every shop event a subscriber receives, in order: (topic, outbox id, attempt, order pk)."""

    def __init__(self, tchu: TchuFactory) -> None:
        self.events: queue.Queue[tuple[str, str, int, Any]] = queue.Queue()
        registry = Registry()
        registry.add("shop.#", self._record, kind="event")
        tchu.worker(registry, "collector")

    def _record(self, data: Any) -> None:
        delivery = current_delivery()
        assert delivery is not None
        headers = delivery.caller_headers
        self.events.put((delivery.topic, headers[HEADER_ID], headers[HEADER_ATTEMPT], data["_meta"]["pk"]))

    def take(self, count: int) -> list[tuple[str, str, int, Any]]:
        """Return the next `count` events (failing after WAIT seconds without one)."""
        return [self.events.get(timeout=WAIT) for _ in range(count)]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(params=sorted(ALL_ALIASES))
def using(request: pytest.FixtureRequest, django_databases: None) -> Iterator[str]:
    """A database alias (MariaDB, PostgreSQL, SQLite), with an empty outbox before and after the test."""
    alias = ALL_ALIASES[request.param]
    OutboxEvent.objects.using(alias).all().delete()
    yield alias
    OutboxEvent.objects.using(alias).all().delete()


def _save_orders_with_the_broker_away(using: str, count: int) -> tuple[list[int], float]:
    """Save `count` orders through the outbox while TCHU_RPC names a closed port; return pks, seconds."""
    away = {"broker_url": f"amqp://guest:guest@127.0.0.1:{_closed_port()}//", "connect_timeout": 1.0}
    with override_settings(TCHU_RPC=away, TCHU_RPC_OUTBOX=True):
        started = time.monotonic()
        pks = []
        for n in range(count):
            with transaction.atomic(using=using):
                pks.append(Order.objects.using(using).create(item=f"tea {n}").pk)
        elapsed = time.monotonic() - started
    close_client()
    return pks, elapsed


def _relay(tchu: TchuFactory, using: str, **options: Any) -> Relay:
    return Relay(tchu.client(), using=using, **options)


def _drain(relay: Relay) -> int:
    sent = 0
    while batch := relay.run_once():
        sent += batch
    return sent


def test_saves_commit_without_the_broker_and_a_relay_delivers_every_event_in_order(
    tchu: TchuFactory, using: str
) -> None:
    # Given the broker unreachable (TCHU_RPC names a closed port), when 1,000 orders are saved
    pks, elapsed = _save_orders_with_the_broker_away(using, SAVES)
    # then every save committed without waiting for the broker, its event in the outbox, unsent
    assert elapsed < 30, f"{SAVES} saves took {elapsed:.1f} s"
    rows = OutboxEvent.objects.using(using).order_by("id")
    assert [row.data["_meta"]["pk"] for row in rows] == pks
    assert all(row.sent_at is None and row.topic == "shop.order.created" for row in rows)
    # When a relay runs against the real broker
    collector = Collector(tchu)
    assert _drain(_relay(tchu, using)) == SAVES
    # then every event is delivered once, in the order of the saves, with the outbox's id
    events = collector.take(SAVES)
    assert [pk for _, _, _, pk in events] == pks
    assert {outbox_id for _, outbox_id, _, _ in events} == {str(row.message_id) for row in rows}
    assert {attempt for _, _, attempt, _ in events} == {1}
    assert OutboxEvent.objects.using(using).filter(sent_at__isnull=True).count() == 0


def test_two_relays_at_once_send_no_row_twice(tchu: TchuFactory, using: str) -> None:
    # Given 1,000 events in the outbox on two topics
    with transaction.atomic(using=using):
        for n in range(SAVES):
            OutboxEvent.objects.using(using).create(topic=f"shop.t{n % 2}", data={"_meta": {"pk": n}})
    collector = Collector(tchu)
    # When two relays, each on its own connections, send at once
    relays = [_relay(tchu, using, batch=50), _relay(tchu, using, batch=50)]
    counts: list[int] = []
    start = threading.Barrier(2)

    def run(relay: Relay) -> None:
        start.wait(timeout=WAIT)
        try:
            counts.append(_drain(relay))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(relay,)) for relay in relays]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    # then together they sent each row once, and each topic's rows in row order
    assert sum(counts) == SAVES
    events = collector.take(SAVES)
    assert sorted(pk for _, _, _, pk in events) == list(range(SAVES))
    for topic in ("shop.t0", "shop.t1"):
        of_topic = [pk for t, _, _, pk in events if t == topic]
        assert of_topic == sorted(of_topic)
    assert set(OutboxEvent.objects.using(using).values_list("attempts", flat=True)) == {1}


def test_a_relay_killed_between_publish_and_mark_is_followed_by_a_flagged_resend(
    tchu: TchuFactory, using: str
) -> None:
    # Given three events, and a relay that publishes them and dies before it marks them sent
    for n in range(3):
        OutboxEvent.objects.using(using).create(topic="shop.order.created", data={"_meta": {"pk": n}})
    collector = Collector(tchu)
    dying = _relay(tchu, using, lease=5.0)
    dying._settle = lambda *args: None  # type: ignore[method-assign]  # as a kill -9 would skip it
    assert dying.run_once() == 3
    first = collector.take(3)
    # When another relay runs while the claim holds, then it sends nothing
    assert _relay(tchu, using).run_once() == 0
    # and once the claim has lapsed, it sends them again, flagged as possible duplicates.
    later = _relay(tchu, using, clock=lambda: timezone.now() + timedelta(seconds=6))
    assert _drain(later) == 3
    again = collector.take(3)
    assert [(o, pk) for _, o, _, pk in again] == [(o, pk) for _, o, _, pk in first]
    assert [a for _, _, a, _ in first] == [1, 1, 1] and [a for _, _, a, _ in again] == [2, 2, 2]


def test_sent_rows_are_pruned_after_keep(tchu: TchuFactory, using: str) -> None:
    OutboxEvent.objects.using(using).create(topic="shop.order.created", data={"_meta": {"pk": 1}})
    collector = Collector(tchu)
    relay = _relay(tchu, using, keep=60.0)
    assert relay.run_once() == 1 and collector.take(1)
    assert relay.prune() == 0  # sent just now: kept
    later = _relay(tchu, using, keep=60.0, clock=lambda: timezone.now() + timedelta(seconds=61))
    assert later.prune() == 1
    assert not OutboxEvent.objects.using(using).exists()


def test_publish_on_commit_with_outbox_writes_in_the_transaction_and_a_rollback_writes_nothing(
    using: str,
) -> None:
    from tchu_rpc.django import publish_on_commit

    with pytest.raises(RuntimeError), transaction.atomic(using=using):
        publish_on_commit("shop.lost", {"n": 1}, using=using, outbox=True)
        raise RuntimeError("roll back")
    with transaction.atomic(using=using):
        publish_on_commit("shop.kept", {"n": 2}, using=using, outbox=True)
    assert list(OutboxEvent.objects.using(using).values_list("topic", "data")) == [("shop.kept", {"n": 2})]


def test_saving_through_the_outbox_makes_no_client(using: str) -> None:
    from tchu_rpc.django import publishing

    close_client()
    with override_settings(TCHU_RPC_OUTBOX=True):
        Order.objects.using(using).create(item="tea")  # autocommit
    assert OutboxEvent.objects.using(using).count() == 1
    assert publishing._client is None  # nothing connected to publish


def _command(tchu: TchuFactory, log: Any, *args: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "TCHU_TEST_DATABASE": "postgres",
        "TCHU_RPC_BROKER_URL": tchu.settings.broker_url,
        "TCHU_RPC_EVENTS_EXCHANGE": tchu.settings.events_exchange,
        "TCHU_RPC_CALLS_EXCHANGE": tchu.settings.calls_exchange,
    }
    command = [sys.executable, "manage.py", *args]
    return subprocess.Popen(command, cwd=PROJECT, env=env, stdout=log, stderr=subprocess.STDOUT)


def _stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


@pytest.mark.parametrize(
    "command",
    [["tchu_rpc_outbox"], ["tchu_rpc_worker", "--queue", "{queue}", "--outbox"]],
    ids=["outbox", "worker"],
)
def test_the_commands_relay_the_outbox_until_stopped(
    tchu: TchuFactory, django_databases: None, tmp_path: Any, command: list[str]
) -> None:
    # Given events in PostgreSQL's outbox, and a subscriber
    OutboxEvent.objects.using("postgres").all().delete()
    for n in range(20):
        OutboxEvent.objects.using("postgres").create(topic="shop.order.created", data={"_meta": {"pk": n}})
    collector = Collector(tchu)
    # When the command runs, then every event arrives, in order
    with (tmp_path / "command.log").open("w") as log:
        proc = _command(tchu, log, *(arg.format(queue=tchu.service("shop")) for arg in command))
        try:
            events = collector.take(20)
        finally:
            code = _stop(proc)
    assert [pk for _, _, _, pk in events] == list(range(20)), (tmp_path / "command.log").read_text()
    # and it stops cleanly on SIGTERM, every row marked sent.
    assert code == 0, (tmp_path / "command.log").read_text()
    assert not OutboxEvent.objects.using("postgres").filter(sent_at__isnull=True).exists()
    OutboxEvent.objects.using("postgres").all().delete()
