"""Models of the test app: auto-published orders and accounts, a mixin-published note, what the worker saw."""

import uuid

from django.db import models

from tchu_rpc.django import auto_publish
from tchu_rpc.django.mixins import EventPublishingMixin


@auto_publish()
class Order(models.Model):
    item = models.CharField(max_length=50)
    quantity = models.IntegerField(default=1)
    placed_at = models.DateTimeField(auto_now_add=True)


class Note(EventPublishingMixin):
    tchu_publish_on = ("created",)
    text = models.CharField(max_length=50)


class Seen(models.Model):
    """An event the worker's subscriber handled."""

    topic = models.CharField(max_length=100)
    order_pk = models.BigIntegerField()


@auto_publish
class Account(models.Model):
    """Bare `@auto_publish`: sensitive fields left out; one JSON form per field type."""

    name = models.CharField(max_length=50)
    password = models.CharField(max_length=128, default="")
    api_token = models.CharField(max_length=64, default="")
    client_secret = models.CharField(max_length=64, default="")
    balance = models.DecimalField(max_digits=10, decimal_places=2, default=0)
    uid = models.UUIDField(default=uuid.uuid4)
    born = models.DateField(null=True)
    seen_at = models.DateTimeField(null=True)


@auto_publish(include_fields=("name", "password"), topic_prefix="shop.auth")
class Login(models.Model):
    """A password sent because `include_fields` names it."""

    name = models.CharField(max_length=50)
    password = models.CharField(max_length=128, default="")
