"""The Celery app of the tchu-tchu baseline, set up the way tchu-tchu 2.2.21 documents it.

Runs only inside the tchu-tchu venv (`celery -A benchmarks.tchu_tchu_app worker`, and imported by
`benchmarks.tchu_tchu_driver`): tchu-tchu and Celery are never imported into the main venv.
Configured from BENCH_TCHU_* environment variables set by `benchmarks.tchu_tchu_baseline`.

`setup_celery_queue` is tchu-tchu's one-line helper: it binds a durable queue to a durable topic
exchange for every `@subscribe` pattern, routes its dispatcher task there, and sets its recommended
worker_prefetch_multiplier=1, task_acks_late, task_track_started and task_reject_on_worker_lost.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from celery import Celery, signals
from tchu_tchu import setup_celery_queue, subscribe

BROKER = os.environ["BENCH_TCHU_BROKER"]
BACKEND = os.environ["BENCH_TCHU_BACKEND"]
EXCHANGE = os.environ["BENCH_TCHU_EXCHANGE"]
QUEUE = os.environ["BENCH_TCHU_QUEUE"]
KEY_PREFIX = os.environ["BENCH_TCHU_KEY_PREFIX"]

if os.environ.get("BENCH_TCHU_QUIET_LOGS") == "1":
    # tchu-tchu gives each of its loggers an INFO level and a handler of its own at import, so by
    # default it logs several JSON lines per call; this variant measures it without them.
    for _name in list(logging.root.manager.loggerDict):
        if _name.startswith("tchu_tchu"):
            logging.getLogger(_name).setLevel(logging.WARNING)

app = Celery("bench_tchu_tchu", broker=BROKER, backend=BACKEND)
app.conf.update(
    # The serializer settings tchu-tchu's README recommends.
    task_serializer="json",
    accept_content=["json"],
    result_serializer="json",
    # Housekeeping only, none on the call path: results of this run expire after 10 minutes and
    # carry a per-run key prefix (deleted by the driver), and no pidbox queue is left behind.
    result_expires=600,
    result_backend_transport_options={"global_keyprefix": KEY_PREFIX},
    worker_enable_remote_control=False,
    worker_hijack_root_logger=True,
)


@subscribe("rpc.bench.echo")
def echo(data: Any) -> Any:
    """Return the request: the RPC handler under test."""
    return data


setup_celery_queue(app, queue_name=QUEUE, subscriber_modules=[__name__], exchange_name=EXCHANGE)


@signals.worker_ready.connect
def _print_ready(**_: object) -> None:
    # Celery redirects sys.stdout to its logger in workers; the harness reads the real stdout.
    assert sys.__stdout__ is not None
    sys.__stdout__.write("ready\n")
    sys.__stdout__.flush()
