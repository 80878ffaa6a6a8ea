"""`EventPublishingMixin`: a model base that publishes its saves and deletes once they commit."""

from __future__ import annotations

from typing import Any, ClassVar

from django.db import models
from django.db.models.signals import class_prepared

from tchu_rpc.django.conf import outbox_default
from tchu_rpc.django.payload import model_payload, warn_sensitive
from tchu_rpc.django.publishing import EVENT_TYPES, publish_on_commit


class EventPublishingMixin(models.Model):
    """Publish `<prefix>.<model_name>.created|updated|deleted` after each save or delete commits.

    Set `tchu_topic_prefix` (default: the app label), `tchu_publish_on`, `tchu_include_fields`,
    `tchu_exclude_fields` or `tchu_outbox` on the model class; call `publish_event()` for an event
    of your own.
    """

    tchu_topic_prefix: ClassVar[str | None] = None
    tchu_publish_on: ClassVar[tuple[str, ...]] = EVENT_TYPES
    tchu_include_fields: ClassVar[tuple[str, ...] | None] = None
    tchu_exclude_fields: ClassVar[tuple[str, ...]] = ()
    #: Write events to the transactional outbox (None: the `TCHU_RPC_OUTBOX` setting's choice).
    tchu_outbox: ClassVar[bool | None] = None

    class Meta:
        abstract = True

    def save(self, *args: Any, **kwargs: Any) -> None:
        created = self._state.adding
        super().save(*args, **kwargs)
        event_type = "created" if created else "updated"
        if event_type in self.tchu_publish_on:
            self.publish_event(event_type)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        data = model_payload(self, self.tchu_include_fields, self.tchu_exclude_fields)  # before pk is cleared
        using = kwargs.get("using") or self._state.db
        result: tuple[int, dict[str, int]] = super().delete(*args, **kwargs)
        if "deleted" in self.tchu_publish_on:
            self.publish_event("deleted", data, using=using)
        return result

    def publish_event(self, event_type: str, data: Any = None, *, using: str | None = None) -> None:
        """Publish `<prefix>.<model_name>.<event_type>` with `data` (default: the payload) on commit."""
        prefix = self.tchu_topic_prefix or self._meta.app_label
        if data is None:
            data = model_payload(self, self.tchu_include_fields, self.tchu_exclude_fields)
        topic = f"{prefix}.{self._meta.model_name}.{event_type}"
        outbox = outbox_default() if self.tchu_outbox is None else self.tchu_outbox
        publish_on_commit(topic, data, using=using or self._state.db, outbox=outbox)


def _prepared(sender: type[models.Model], **_: Any) -> None:
    if issubclass(sender, EventPublishingMixin) and sender.tchu_include_fields is None:
        warn_sensitive(sender)  # as the model is defined: the fields its events leave out


class_prepared.connect(_prepared, dispatch_uid="tchu_rpc.django.mixins.sensitive")
