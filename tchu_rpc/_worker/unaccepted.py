"""Refuse tchu-tchu's messages at a worker that does not accept them, saying which flag would.

Without `accept_tchu_tchu` a tchu-tchu message (a Celery task message for `tchu_tchu.dispatch_event`,
`_worker.legacy`) that reaches the events queue, because one of the service's event patterns
matches its topic, is never handed to a handler: its body is Celery's task body, not the data.
It is dead-lettered as `TchuTchuNotAccepted`, and a call among them is answered as Celery's rpc://
backend reports a failed task, so that a `tchu_rpc.compat.TchuClient` (or a tchu-tchu client)
fails at once with the same hint instead of waiting out its timeout.
"""

from __future__ import annotations

import datetime
from typing import Any, Final

import msgspec

from tchu_rpc._worker import legacy
from tchu_rpc._worker.messages import describe
from tchu_rpc.errors import DecodeError
from tchu_rpc.log import get_logger

logger = get_logger(__name__)

#: The error type a refused tchu-tchu message is dead-lettered (and a call answered) with.
NOT_ACCEPTED: Final = "TchuTchuNotAccepted"
REASON: Final = (
    "a tchu-tchu (Celery task) message, and this worker does not accept tchu-tchu's format: start it "
    "with --accept-tchu-tchu (Worker(accept_tchu_tchu=True), TCHU_RPC_ACCEPT_TCHU_TCHU=1 or "
    "TCHU_RPC={'accept_tchu_tchu': True} in Django)"
)


def refusal(service: str, message: Any, limit: int) -> tuple[str, bytes | None] | None:
    """Return why a tchu-tchu message is refused and the answer to its caller; None for a native one.

    A body over `limit` bytes is not looked into (`legacy.recognize`): it is refused for its size.
    """
    try:
        task = legacy.recognize(message, limit)
    except DecodeError:  # it names tchu-tchu's task, with a body tchu-tchu does not send
        task = None
    else:
        if task is None:
            return None
    logger.warning("request_refused", service=service, reason=REASON, **describe(message))
    dead_reason = f"{NOT_ACCEPTED}: {REASON}"
    if task is None or not task.is_rpc or not legacy.answerable(message):
        return dead_reason, None
    return dead_reason, _celery_failure(task.id or message.properties.get("correlation_id"))


def _celery_failure(task_id: Any) -> bytes:
    """Encode a task failure as Celery's rpc:// backend stores it (`exc_type`, `exc_message`)."""
    meta = {
        "status": "FAILURE",
        "result": {"exc_type": NOT_ACCEPTED, "exc_message": REASON, "exc_module": "tchu_rpc.errors"},
        "traceback": None,
        "children": [],
        "date_done": datetime.datetime.now(datetime.UTC).isoformat(),
        "task_id": task_id,
    }
    return msgspec.json.encode(meta)
