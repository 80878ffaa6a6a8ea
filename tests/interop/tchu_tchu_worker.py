"""Run a real Celery worker serving tchu-tchu handlers (run only by the interop tests, in a test venv).

    python tchu_tchu_worker.py '{"broker": URL, "exchange": NAME, "queue": NAME, "prefix": P, "out": PATH}'

Set up as a tchu-tchu service is (`setup_celery_queue`, the rpc:// result backend), with handlers

- `<prefix>.created` (event): appends the event's data as one JSON line to `out`;
- `rpc.<prefix>.echo` (call): returns `{"echoed": data}` (without `_tchu_meta`);
- `rpc.<prefix>.fail` (call): raises `ValueError("no user <id>")`.

Prints `READY` once the worker consumes (its queue bound); runs until killed.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from celery import Celery
from celery.signals import worker_ready
from kombu import Exchange, Queue, binding
from tchu_tchu import get_subscribed_routing_keys, setup_celery_queue, subscribe

_SPEC = json.loads(sys.argv[1])
_PREFIX = _SPEC["prefix"]


def _clean(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k != "_tchu_meta"}


@subscribe(f"{_PREFIX}.created")
def created(data: dict[str, Any]) -> None:
    with open(_SPEC["out"], "a") as out:
        out.write(json.dumps(_clean(data)) + "\n")


@subscribe(f"rpc.{_PREFIX}.echo")
def echo(data: dict[str, Any]) -> dict[str, Any]:
    return {"echoed": _clean(data)}


@subscribe(f"rpc.{_PREFIX}.fail")
def fail(data: dict[str, Any]) -> None:
    raise ValueError(f"no user {data['id']}")


def _ready(**_: Any) -> None:
    sys.stdout.write("READY\n")
    sys.stdout.flush()


def main() -> None:
    app = Celery(_PREFIX, broker=_SPEC["broker"], backend="rpc://")
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        broker_connection_retry_on_startup=True,
    )
    # The handlers are registered above, in this module: nothing more to import.
    queue, exchange = _SPEC["queue"], Exchange(_SPEC["exchange"], "topic", durable=True)
    setup_celery_queue(app, queue, [], exchange_name=exchange.name, auto_delete=True)
    # What 3.x's `setup_celery_queue` leaves to receivers of `celeryd_after_setup` and `worker_ready`,
    # which it connects weakly (Celery's default) as nested functions: they are gone before the worker
    # starts. Bind as they would (2.x binds at once): the topics, and the queue's own name, which is
    # how 3.x's event handler tasks (`apply_async` to the default queue) come back to it.
    keys = [queue, *get_subscribed_routing_keys()]
    bindings = [binding(exchange, routing_key=key) for key in keys]
    app.conf.task_queues = (Queue(queue, exchange, routing_key=queue, bindings=bindings, auto_delete=True),)
    # After `setup_celery_queue`'s own receivers: tchu-tchu 3.x binds the queue on `worker_ready`.
    worker_ready.connect(_ready, weak=False)
    argv = ["worker", "--pool=solo", "--loglevel=INFO", "--without-gossip", "--without-mingle"]
    app.worker_main([*argv, "--without-heartbeat", "-n", f"{_PREFIX}@%h"])


if __name__ == "__main__":
    main()
