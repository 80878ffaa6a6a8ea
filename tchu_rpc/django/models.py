"""The transactional outbox's table: events written in the saving transaction, sent later by a relay."""

from __future__ import annotations

import uuid

from django.db import models


class OutboxEvent(models.Model):
    """One event to publish: written with the change it reports, marked sent once the broker confirmed it.

    `message_id` travels with the event (`x-tchu-outbox-id` header): a consumer de-duplicates by it.
    `attempts` counts the relays that claimed it; above 1 the event may have been sent before.
    """

    id = models.BigAutoField(primary_key=True)
    message_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    topic = models.CharField(max_length=255)
    data = models.JSONField(null=True)
    created_at = models.DateTimeField(auto_now_add=True)
    #: A relay holds it until then (it is sending it); after, another relay may take it over.
    claimed_until = models.DateTimeField(null=True)
    attempts = models.PositiveIntegerField(default=0)
    sent_at = models.DateTimeField(null=True)

    class Meta:
        app_label = "tchu_rpc"
        db_table = "tchu_rpc_outbox"
        indexes = [  # noqa: RUF012 (Django's Meta)
            models.Index(fields=["sent_at", "id"], name="tchu_rpc_outbox_unsent"),
            models.Index(fields=["topic", "id"], name="tchu_rpc_outbox_topic"),
        ]

    def __str__(self) -> str:
        return f"{self.topic} #{self.id}"
