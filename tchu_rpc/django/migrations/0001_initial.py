"""The outbox table (`OutboxEvent`)."""

import uuid
from typing import Any, ClassVar

from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies: ClassVar[list[Any]] = []

    operations: ClassVar[list[Any]] = [
        migrations.CreateModel(
            name="OutboxEvent",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("message_id", models.UUIDField(default=uuid.uuid4, editable=False, unique=True)),
                ("topic", models.CharField(max_length=255)),
                ("data", models.JSONField(null=True)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("claimed_until", models.DateTimeField(null=True)),
                ("attempts", models.PositiveIntegerField(default=0)),
                ("sent_at", models.DateTimeField(null=True)),
            ],
            options={
                "db_table": "tchu_rpc_outbox",
                "indexes": [
                    models.Index(fields=["sent_at", "id"], name="tchu_rpc_outbox_unsent"),
                    models.Index(fields=["topic", "id"], name="tchu_rpc_outbox_topic"),
                ],
            },
        ),
    ]
