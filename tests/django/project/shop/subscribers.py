"""Handlers of the test app, imported by `tchu_rpc.django` in every worker process."""

from typing import Any

from django.db import connection

from shop.models import Order, Seen
from tchu_rpc import current_delivery, subscribe


@subscribe("rpc.shop.order.get")
def get_order(data: dict[str, Any]) -> dict[str, Any]:
    order = Order.objects.get(pk=data["pk"])
    return {"item": order.item, "quantity": order.quantity, "vendor": connection.vendor}


@subscribe("rpc.shop.seen")
def seen(data: dict[str, Any]) -> list[str]:
    return list(Seen.objects.filter(order_pk=data["pk"]).values_list("topic", flat=True))


@subscribe("rpc.shop.backend_pid")
def backend_pid(data: Any) -> int | None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return int(cursor.fetchone()[0])


@subscribe("shop.order.created")
def order_created(data: dict[str, Any]) -> None:
    delivery = current_delivery()
    Seen.objects.create(topic=delivery.topic if delivery else "?", order_pk=data["_meta"]["pk"])
