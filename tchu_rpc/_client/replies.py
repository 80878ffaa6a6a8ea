"""What arrives at a client's reply address: a reply settles its call, progress moves its deadline."""

from __future__ import annotations

import time
from typing import Any

from tchu_rpc import log, wire
from tchu_rpc._client.callbacks import Callbacks
from tchu_rpc._client.inflight import Inflight, Pending
from tchu_rpc.errors import DecodeError, remote_error
from tchu_rpc.log import logger


def on_reply(inflight: Inflight, callbacks: Callbacks, message: Any) -> None:
    """Settle the call `message` answers, or pass its progress on; drop what nobody waits for."""
    correlation_id = message.properties.get("correlation_id") or ""
    pending = inflight.get(correlation_id)
    if pending is None or pending.kind != "call":
        _dropped(inflight, correlation_id, message)
        return
    try:
        codec = wire.codec_of(message.content_type)
        reply = wire.decode_envelope(codec, message.body)
    except DecodeError as exc:
        inflight.settle(correlation_id, exc)
        return
    if isinstance(reply, wire.Progress):
        _progressed(inflight, callbacks, correlation_id, pending, reply.info)
    elif isinstance(reply, wire.Failure):
        err = reply.error
        inflight.settle(correlation_id, remote_error(err.type, err.message, err.code, err.details))
    else:
        inflight.settle(correlation_id, reply.result)


def _progressed(
    inflight: Inflight, callbacks: Callbacks, message_id: str, pending: Pending, info: Any
) -> None:
    deadline = min(time.monotonic() + pending.timeout, pending.latest)
    if deadline > pending.deadline:
        inflight.postpone(message_id, pending, deadline)
    log.debug("call_progressed", topic=pending.topic, correlation_id=message_id)
    if pending.on_progress is not None:
        callbacks.run(pending.on_progress, info)  # never on the thread reading the connection


def _dropped(inflight: Inflight, correlation_id: str, message: Any) -> None:
    try:
        envelope = wire.decode_envelope(wire.codec_of(message.content_type), message.body)
        progress = isinstance(envelope, wire.Progress)
    except DecodeError:
        progress = False
    outcome = inflight.outcome_of(correlation_id)
    if progress:  # a handler still reporting after its call settled: expected, not a fault
        log.debug("progress_dropped", correlation_id=correlation_id, call_outcome=outcome)
    else:
        logger.warning("reply_dropped", correlation_id=correlation_id, call_outcome=outcome)
