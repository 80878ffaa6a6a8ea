"""Publish from Django: one shared client per process, events sent once the transaction commits."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, overload

from django.core.signals import setting_changed
from django.db import models, transaction
from django.db.models.signals import post_delete, post_save

from tchu_rpc.client import Client
from tchu_rpc.compat.client import tchu_tchu_environ
from tchu_rpc.django.conf import SETTINGS_NAME, outbox_default, settings_from_django
from tchu_rpc.django.payload import model_payload, warn_sensitive
from tchu_rpc.errors import ConfigError
from tchu_rpc.log import get_logger

logger = get_logger(__name__)

M = TypeVar("M", bound=type[models.Model])
#: `condition(instance, event_type)`: publish only when it returns true.
Condition = Callable[[models.Model, str], bool]
EVENT_TYPES = ("created", "updated", "deleted")

_client: Client | None = None
_compat_client: Client | None = None
_client_lock = threading.Lock()


def get_client() -> Client:
    """Return this process's shared client (made on first use from `settings_from_django()`).

    Inside Django, use it (or `Client(settings=settings_from_django())`) rather than `Client()`,
    which reads only `TCHU_RPC_*` variables, never Django's settings.
    """
    global _client
    with _client_lock:
        if _client is None:
            _client = Client(settings=settings_from_django())
        return _client


def compat_client() -> Client:
    """Return the client every `tchu_rpc.compat.TchuClient()` shares inside Django.

    Made on first use from `settings_from_django()`, in tchu-tchu's format unless `TCHU_RPC` or
    `TCHU_RPC_TCHU_TCHU_FORMAT` turn `tchu_tchu_format` off; the app sets it as compat's client
    factory (`tchu_rpc.compat.set_client_factory`) when Django starts.
    """
    global _compat_client
    with _client_lock:
        if _compat_client is None:
            _compat_client = Client(settings=settings_from_django(tchu_tchu_environ()))
        return _compat_client


def close_client() -> None:
    """Close the shared clients; the next use makes new ones (safe when there are none)."""
    global _client, _compat_client
    with _client_lock:
        clients, _client, _compat_client = (_client, _compat_client), None, None
    for client in clients:
        if client is not None:
            client.close()


def _settings_changed(*, setting: str, **_: Any) -> None:
    if setting == SETTINGS_NAME:  # `override_settings(TCHU_RPC=...)` in tests: the next client follows it
        close_client()


setting_changed.connect(_settings_changed, dispatch_uid="tchu_rpc.django.settings_changed")


def publish_on_commit(
    topic: str,
    data: Any,
    *,
    using: str | None = None,
    client: Client | None = None,
    outbox: bool = False,
) -> None:
    """Publish the event `topic` once the transaction on `using` commits; nothing if it rolls back.

    Outside a transaction (autocommit) it publishes at once. A publish that fails after the commit
    is logged (`event_publish_failed`) and not raised: the data is committed and the caller's
    other on-commit callbacks still run. With `outbox`, the event is written now to the outbox
    table, in the same transaction, and a relay publishes it (`tchu_rpc.django.outbox`): nothing
    waits for the broker and nothing is lost while it is away.
    """
    if outbox:
        from tchu_rpc.django import outbox as table  # its model needs the app registry

        table.write(topic, data, using=using)
        return

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


@overload
def auto_publish(topic_prefix: M) -> M: ...


@overload
def auto_publish(
    topic_prefix: str | None = None,
    include_fields: Iterable[str] | None = None,
    exclude_fields: Iterable[str] | None = None,
    publish_on: Iterable[str] | None = None,
    client: Client | None = None,
    condition: Condition | None = None,
    outbox: bool | None = None,
) -> Callable[[M], M]: ...


def auto_publish(
    topic_prefix: Any = None,
    include_fields: Iterable[str] | None = None,
    exclude_fields: Iterable[str] | None = None,
    publish_on: Iterable[str] | None = None,
    client: Client | None = None,
    condition: Condition | None = None,
    outbox: bool | None = None,
) -> Any:
    """Publish `<prefix>.<model_name>.created|updated|deleted` after each save or delete commits.

    Use it as `@auto_publish` or `@auto_publish(...)`. The prefix defaults to the app label
    (`shop.order.created`). The payload is `model_payload()` (`tchu_rpc.django.payload`: one JSON
    form per field type; password, token, secret and api_key fields left out unless
    `include_fields` names them), taken when the signal fires; it is sent once the transaction
    commits, never from one that rolls back. Saves of fixtures (`loaddata`, `raw=True`) publish
    nothing. `condition(instance, event_type)` returning false skips one event. `outbox` writes
    the event to the transactional outbox instead (None: the `TCHU_RPC_OUTBOX` setting's choice).

    Raises:
        ConfigError: an unknown `publish_on` event, or a `topic_prefix` that is neither a string
            nor a model class.
    """
    if isinstance(topic_prefix, type) and issubclass(topic_prefix, models.Model):
        return _decorator(None, None, (), EVENT_TYPES, None, None, None)(topic_prefix)  # bare
    if topic_prefix is not None and not isinstance(topic_prefix, str):
        raise ConfigError(f"auto_publish's topic_prefix is a string, not {type(topic_prefix).__name__}")
    events = tuple(publish_on or EVENT_TYPES)
    wrong = sorted(set(events) - set(EVENT_TYPES))
    if wrong:
        raise ConfigError(f"publish_on takes {', '.join(EVENT_TYPES)}; not {', '.join(wrong)}")
    include = tuple(include_fields) if include_fields is not None else None
    exclude = tuple(exclude_fields or ())
    return _decorator(topic_prefix, include, exclude, events, client, condition, outbox)


def _decorator(
    topic_prefix: str | None,
    include: tuple[str, ...] | None,
    exclude: tuple[str, ...],
    events: tuple[str, ...],
    client: Client | None,
    condition: Condition | None,
    outbox: bool | None,
) -> Callable[[M], M]:
    def decorate(model: M) -> M:
        if not (isinstance(model, type) and issubclass(model, models.Model)):
            raise ConfigError(f"auto_publish decorates a model class, not {model!r}")
        base = f"{topic_prefix or model._meta.app_label}.{model._meta.model_name}"
        if include is None:
            warn_sensitive(model)  # now, at import: the fields left out by default

        def publish(instance: models.Model, event_type: str, using: str | None) -> None:
            if event_type in events and (condition is None or condition(instance, event_type)):
                data = model_payload(instance, include, exclude)
                to_outbox = outbox_default() if outbox is None else outbox
                publish_on_commit(f"{base}.{event_type}", data, using=using, client=client, outbox=to_outbox)

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
