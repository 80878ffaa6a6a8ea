"""How a client's calls settle: a reply or progress at its reply address, a return, a deadline."""

from __future__ import annotations

import time
from typing import Any

import msgspec

from tchu_rpc import _pydantic, wire
from tchu_rpc._client.callbacks import Callbacks
from tchu_rpc._client.inflight import Inflight, Pending
from tchu_rpc.errors import (
    CallTimeout,
    ConnectionLost,
    DecodeError,
    MessageTooLarge,
    NoRoute,
    PublishFailed,
    TchuError,
    remote_error,
)
from tchu_rpc.log import get_logger

logger = get_logger(__name__)


def on_reply(inflight: Inflight, callbacks: Callbacks, limit: int, message: Any) -> None:
    """Settle the call `message` answers, or pass its progress on; drop what nobody waits for.

    A reply over `limit` bytes (`max_message_bytes`) fails its call with `MessageTooLarge`.
    """
    correlation_id = message.properties.get("correlation_id") or ""
    pending = inflight.get(correlation_id)
    if pending is None or pending.kind != "call":
        _dropped(inflight, correlation_id, message)
        return
    try:
        if len(message.body) > limit:
            wire.check_size(len(message.body), limit)  # raises, saying so
        codec = wire.codec_of(message.content_type)
        if pending.envelope is None:
            reply = wire.decode_envelope(codec, message.body)
        else:  # a typed call: the result decodes into its response type, or this is a DecodeError
            reply = codec.decode(message.body, pending.envelope)
    except (DecodeError, MessageTooLarge) as exc:
        inflight.settle(correlation_id, exc)
        return
    by = message.properties.get("app_id")
    if isinstance(reply, wire.Progress):
        _progressed(inflight, callbacks, correlation_id, pending, reply.info)
    elif isinstance(reply, wire.Failure):
        err = reply.error
        details = err.details if pending.error_type is None else _typed(err.details, pending.error_type)
        inflight.settle(correlation_id, remote_error(err.type, err.message, err.code, details), by)
    else:
        inflight.settle(correlation_id, reply.result, by)


def _progressed(
    inflight: Inflight, callbacks: Callbacks, message_id: str, pending: Pending, info: Any
) -> None:
    deadline = min(time.monotonic() + pending.timeout, pending.latest)
    if deadline > pending.deadline:
        inflight.postpone(message_id, pending, deadline)
    logger.debug("call_progressed", topic=pending.topic, correlation_id=message_id)
    if pending.on_progress is not None:
        callbacks.run(pending.on_progress, info)  # never on the thread reading the connection


def _dropped(inflight: Inflight, correlation_id: str, message: Any) -> None:
    try:
        envelope = wire.decode_envelope(wire.codec_of(message.content_type), message.body)
        progress = isinstance(envelope, wire.Progress)
    except DecodeError:
        progress = False
    outcome = inflight.outcome_of(correlation_id)
    by = message.properties.get("app_id")
    if progress:  # a handler still reporting after its call settled: expected, not a fault
        logger.debug("progress_dropped", correlation_id=correlation_id, call_outcome=outcome, service=by)
    elif outcome == "cancelled":  # its caller gave up waiting (a cancelled asyncio task): expected
        logger.debug("reply_dropped", correlation_id=correlation_id, call_outcome=outcome, service=by)
    else:
        # Two answers to one call: its topic is bound by two services, or its request was redelivered.
        logger.warning("reply_dropped", correlation_id=correlation_id, call_outcome=outcome, service=by)


def no_route(routing_key: str, exchange: str, text: str, tchu_tchu: bool = False) -> NoRoute:
    """Return the error of a call the broker returned: no queue is bound for its topic.

    `tchu_tchu`: the call was sent in tchu-tchu's format (`Settings.tchu_tchu_format`), which only a
    tchu-tchu worker or a tchu_rpc worker started with `--accept-tchu-tchu` binds for.
    """
    if tchu_tchu:
        hint = (
            "is a tchu-tchu worker subscribed to it, or a tchu_rpc worker with a handler for it "
            "started with --accept-tchu-tchu (accept_tchu_tchu=True)? Without that flag a tchu_rpc "
            "worker binds its calls on the calls exchange only, where tchu-tchu's format never goes"
        )
    else:
        hint = (
            "is a worker running with a call handler for it (kind='call', or a topic starting with 'rpc.')?"
        )
    return NoRoute(
        f"no service is bound for call topic {routing_key!r} on exchange {exchange!r} ({text}); {hint}"
    )


def expired(
    pending: Pending, connected: bool, last_error: BaseException | None, blocked: str | None = None
) -> TchuError:
    """Return the error of a call or publish whose deadline passed; say whether it may still arrive.

    The type says what stood in the way: `ConnectionLost` only for a client without a connection
    (another node may serve it), `PublishFailed` for a broker that kept refusing it, and the time's
    error (`CallTimeout`, or `PublishFailed` for an event) for the rest.
    """
    what = f"{pending.kind} {pending.topic!r}"
    if not pending.sent:
        return _not_sent(pending, what, connected, last_error, blocked)
    also = f" (the broker blocks publishers: {blocked})" if blocked is not None else ""
    if pending.refused is not None:
        also += f" ({pending.refused.said(time.monotonic())} before)"
    if pending.kind == "event":
        # Sent, not confirmed: the broker may have it, and may still deliver it.
        return PublishFailed(f"no confirm for {what} before the deadline{also}; it may still be delivered")
    if blocked is not None:  # sent: the broker keeps it until the alarm clears, then delivers it
        also += "; it was sent, and its handler may still run"
    return CallTimeout(f"no reply to {what} before the deadline{also}")


def _not_sent(
    pending: Pending, what: str, connected: bool, last_error: BaseException | None, blocked: str | None
) -> TchuError:
    time_is_up = PublishFailed if pending.kind == "event" else CallTimeout
    if blocked is not None:
        why = f"not sent: the broker blocks publishers ({blocked}) until its resource alarm clears"
        return time_is_up(f"{what} {why}")
    refused = pending.refused
    if not connected:
        why = f": {last_error}" if last_error is not None else " (not connected yet)"
        also = "" if refused is None else f"; before, {refused.said(time.monotonic())}"
        return ConnectionLost(f"broker unreachable for {what}{why}{also}")
    if refused is not None:
        # A nack says that the broker does not vouch for the message, not that it dropped it.
        return PublishFailed(
            f"{what} not taken before its deadline: {refused.said(time.monotonic())} (as a quorum queue "
            "does while it elects a leader); it may still have been enqueued"
        )
    return time_is_up(f"{what} not sent: its deadline ({pending.timeout:g} s) passed before it could be sent")


def _typed(details: Any, error_type: Any) -> Any:
    """Return a failure's details as the topic's error type, or as they came if they do not fit it."""
    if details is None or error_type is Any:
        return details
    try:
        if _pydantic.is_model(error_type):
            return _pydantic.validate(error_type, details)
        return msgspec.convert(details, error_type, strict=False)
    except msgspec.ValidationError:
        return details  # another error than the declared one (a worker's, say): kept as data
