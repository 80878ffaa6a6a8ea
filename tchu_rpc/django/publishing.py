"""Publish from Django: one shared client per process, events sent once the transaction commits."""

from __future__ import annotations

import datetime
import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from django.core.signals import setting_changed
from django.db import models, transaction
from django.db.models.signals import post_delete, post_save

from tchu_rpc.client import Client
from tchu_rpc.django.conf import SETTINGS_NAME, settings_from_django
from tchu_rpc.errors import ConfigError
from tchu_rpc.log import get_logger

logger = get_logger(__name__)

M = TypeVar("M", bound=type[models.Model])
#: `condition(instance, event_type)`: publish only when it returns true.
Condition = Callable[[models.Model, str], bool]
EVENT_TYPES = ("created", "updated", "deleted")

_client: Client | None = None
_client_lock = threading.Lock()


def get_client() -> Client:
    """Return this process's shared client (made on first use from `settings_from_django()`)."""
    global _client
    with _client_lock:
        if _client is None:
            _client = Client(settings=settings_from_django())
        return _client


def close_client() -> None:
    """Close the shared client; the next `get_client()` makes a new one (safe when there is none)."""
    global _client
    with _client_lock:
        client, _client = _client, None
    if client is not None:
        client.close()


def _settings_changed(*, setting: str, **_: Any) -> None:
    if setting == SETTINGS_NAME:  # `override_settings(TCHU_RPC=...)` in tests: the next client follows it
        close_client()


setting_changed.connect(_settings_changed, dispatch_uid="tchu_rpc.django.settings_changed")


def publish_on_commit(
    topic: str, data: Any, *, using: str | None = None, client: Client | None = None
) -> None:
    """Publish the event `topic` once the transaction on `using` commits; nothing if it rolls back.

    Outside a transaction (autocommit) it publishes at once. A publish that fails after the commit
    is logged (`event_publish_failed`) and not raised: the data is committed and the caller's
    other on-commit callbacks still run.
    """

    def send() -> None:
        try:
            (client or get_client()).publish(topic, data)
        except Exception as exc:
            logger.error(
                "event_publish_failed",
                topic=topic,
                error_type=type(exc).__name__,
                error=str(exc),
                exc_info=exc,
            )

    transaction.on_commit(send, using=using)


def model_payload(
    instance: models.Model,
    include_fields: Iterable[str] | None = None,
    exclude_fields: Iterable[str] | None = None,
) -> dict[str, Any]:
    """Return the instance's field values (a relation as its key) and `_meta`, as tchu-tchu sends them."""
    include = set(include_fields) if include_fields is not None else None
    exclude = set(exclude_fields or ())
    opts = instance._meta
    data: dict[str, Any] = {}
    for field in opts.concrete_fields:
        if field.name in exclude or (include is not None and field.name not in include):
            continue
        data[field.name] = _plain(field.value_from_object(instance))
    data["_meta"] = {"app_label": opts.app_label, "model_name": opts.model_name, "pk": _plain(instance.pk)}
    return data


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    return str(value)  # Decimal, UUID, files: their text, as tchu-tchu sends them


def auto_publish(
    topic_prefix: str | None = None,
    include_fields: Iterable[str] | None = None,
    exclude_fields: Iterable[str] | None = None,
    publish_on: Iterable[str] | None = None,
    client: Client | None = None,
    condition: Condition | None = None,
) -> Callable[[M], M]:
    """Publish `<prefix>.<model_name>.created|updated|deleted` after each save or delete commits.

    The prefix defaults to the app label (`shop.order.created`). The payload is `model_payload()`,
    taken when the signal fires; it is sent once the transaction commits, never from one that rolls
    back. Saves of fixtures (`loaddata`, `raw=True`) publish nothing.
    """
    events = tuple(publish_on or EVENT_TYPES)
    wrong = sorted(set(events) - set(EVENT_TYPES))
    if wrong:
        raise ConfigError(f"publish_on takes {', '.join(EVENT_TYPES)}; not {', '.join(wrong)}")
    include = tuple(include_fields) if include_fields is not None else None
    exclude = tuple(exclude_fields or ())

    def decorate(model: M) -> M:
        base = f"{topic_prefix or model._meta.app_label}.{model._meta.model_name}"

        def publish(instance: models.Model, event_type: str, using: str | None) -> None:
            if event_type in events and (condition is None or condition(instance, event_type)):
                data = model_payload(instance, include, exclude)
                publish_on_commit(f"{base}.{event_type}", data, using=using, client=client)

        def saved(sender: Any, instance: models.Model, created: bool, raw: bool = False, **kw: Any) -> None:
            if not raw:
                publish(instance, "created" if created else "updated", kw.get("using"))

        def deleted(sender: Any, instance: models.Model, **kw: Any) -> None:
            publish(instance, "deleted", kw.get("using"))

        uid = f"tchu_rpc.auto_publish.{model._meta.label_lower}"
        post_save.connect(saved, sender=model, weak=False, dispatch_uid=f"{uid}.save")
        post_delete.connect(deleted, sender=model, weak=False, dispatch_uid=f"{uid}.delete")
        return model

    return decorate
