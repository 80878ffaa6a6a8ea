"""Events from Django models: published once the transaction commits, never from one rolled back."""

from __future__ import annotations

import queue
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import ALIASES
from django.db import transaction
from django.test import override_settings
from shop.models import Note, Order

from tchu_rpc import Registry, Settings, current_delivery, default_registry
from tchu_rpc.django import close_client, get_client, settings_from_django
from tchu_rpc.errors import ConfigError
from tchu_rpc.testing import TchuFactory

WAIT = 10.0


class Received:
    """Events a test's subscriber received, in order; `marker()` proves everything before it arrived."""

    def __init__(self, tchu: TchuFactory) -> None:
        self._events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._markers = 0
        registry = Registry()
        registry.add("shop.#", self._record, kind="event")
        tchu.worker(registry, "recorder")

    def _record(self, data: Any) -> None:
        delivery = current_delivery()
        assert delivery is not None
        self._events.put((delivery.topic, data))

    def marker(self) -> list[tuple[str, Any]]:
        """Publish a marker at once; return the events received before it (in one queue, in order)."""
        self._markers += 1
        get_client().publish("shop.marker", self._markers)
        seen = []
        while True:
            topic, data = self._events.get(timeout=WAIT)
            if topic == "shop.marker" and data == self._markers:
                return seen
            seen.append((topic, data))


@pytest.fixture
def received(tchu: TchuFactory, django_databases: None) -> Iterator[Received]:
    """Point Django's TCHU_RPC at the test's exchanges; yield the events a subscriber receives."""
    fields = ("broker_url", "events_exchange", "calls_exchange")
    with override_settings(TCHU_RPC={name: getattr(tchu.settings, name) for name in fields}):
        yield Received(tchu)
    close_client()


def test_save_publishes_once_after_the_transaction_commits(received: Received, backend: str) -> None:
    using = ALIASES[backend]
    with transaction.atomic(using=using):
        order = Order.objects.using(using).create(item="tea", quantity=2)
        # Inside the transaction: nothing was sent yet.
        assert received.marker() == []
    events = received.marker()
    assert [topic for topic, _ in events] == ["shop.order.created"]
    data = events[0][1]
    assert data["_meta"] == {"app_label": "shop", "model_name": "order", "pk": order.pk}
    assert (data["id"], data["item"], data["quantity"]) == (order.pk, "tea", 2)
    assert data["placed_at"] == order.placed_at.isoformat()


def test_rolled_back_save_publishes_nothing(received: Received, backend: str) -> None:
    using = ALIASES[backend]
    with pytest.raises(RuntimeError), transaction.atomic(using=using):
        Order.objects.using(using).create(item="lost")
        raise RuntimeError("roll back")
    assert received.marker() == []


def test_save_in_a_rolled_back_savepoint_publishes_nothing(received: Received, backend: str) -> None:
    using = ALIASES[backend]
    with transaction.atomic(using=using):
        kept = Order.objects.using(using).create(item="kept")
        with pytest.raises(RuntimeError), transaction.atomic(using=using):
            Order.objects.using(using).create(item="lost")
            raise RuntimeError("roll back the savepoint")
    assert [(t, d["item"]) for t, d in received.marker()] == [("shop.order.created", kept.item)]


def test_update_and_delete_publish_after_autocommit(received: Received, backend: str) -> None:
    using = ALIASES[backend]
    order = Order.objects.using(using).create(item="tea")
    order.quantity = 3
    order.save(using=using)
    pk = order.pk
    order.delete(using=using)
    events = received.marker()
    assert [topic for topic, _ in events] == [
        "shop.order.created",
        "shop.order.updated",
        "shop.order.deleted",
    ]
    assert events[1][1]["quantity"] == 3
    assert events[2][1]["_meta"]["pk"] == pk


def test_mixin_publishes_after_commit(received: Received, backend: str) -> None:
    using = ALIASES[backend]
    with transaction.atomic(using=using):
        note = Note(text="hello")
        note.save(using=using)
        assert received.marker() == []
    events = received.marker()
    assert [(t, d["text"], d["_meta"]["pk"]) for t, d in events] == [("shop.note.created", "hello", note.pk)]


def test_settings_come_from_django_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TCHU_RPC_CALL_TIMEOUT", "3")
    monkeypatch.setenv("TCHU_RPC_PUBLISH_TIMEOUT", "4")
    with override_settings(TCHU_RPC={"call_timeout": 7.0}):
        settings = settings_from_django()
    assert (settings.call_timeout, settings.publish_timeout) == (7.0, 4.0)
    assert isinstance(settings, Settings)


def test_unknown_django_setting_is_refused() -> None:
    with override_settings(TCHU_RPC={"brokr_url": "amqp://x"}), pytest.raises(ConfigError, match="brokr_url"):
        settings_from_django()


def test_installed_apps_subscribers_are_registered() -> None:
    assert [h.name for h in default_registry.match("rpc.shop.order.get", "call")] == [
        "shop.subscribers.get_order"
    ]


def test_core_never_imports_the_django_integration() -> None:
    # kombu imports django.utils.functional when Django is installed; we import nothing of Django.
    code = (
        "import sys, tchu_rpc, tchu_rpc.process, tchu_rpc.testing\n"
        "sys.exit(any(m in sys.modules for m in ('tchu_rpc.django', 'django.conf', 'django.db')))"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False, timeout=60).returncode == 0
