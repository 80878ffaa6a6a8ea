"""Models of the test app: an auto-published order, a mixin-published note, what the worker saw."""

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
