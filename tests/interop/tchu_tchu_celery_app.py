"""A tchu-tchu service's Celery app (run only by the take-over test, inside a test venv).

    celery -A tchu_tchu_celery_app worker --pool solo

Configured by environment variables: `TAKEOVER_BROKER`, `TAKEOVER_QUEUE` (the service queue, made by
tchu-tchu's own `setup_celery_queue`), `TAKEOVER_EXCHANGE`, `TAKEOVER_TOPIC` and `TAKEOVER_OUT`: the
handler appends each event's `n` there, one line each.
"""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Celery
from tchu_tchu import setup_celery_queue, subscribe

_OUT = os.environ["TAKEOVER_OUT"]


@subscribe(os.environ["TAKEOVER_TOPIC"])
def record(data: dict[str, Any]) -> None:
    time.sleep(0.005)  # slow enough that the test stops the worker with events still queued
    with open(_OUT, "a") as out:
        out.write(f"{data['n']}\n")


app = Celery("takeover", broker=os.environ["TAKEOVER_BROKER"])
# No remote control: its exclusive `<node>.celery.pidbox` queue would clash with other Celery workers.
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    worker_hijack_root_logger=False,
    worker_enable_remote_control=False,
)
setup_celery_queue(
    app,
    queue_name=os.environ["TAKEOVER_QUEUE"],
    subscriber_modules=[],
    exchange_name=os.environ["TAKEOVER_EXCHANGE"],
)
