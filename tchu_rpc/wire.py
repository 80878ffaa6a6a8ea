"""Wire format: codecs for bodies (JSON by default, MessagePack), the reply envelope, header names.

A request or event body is the caller's data, encoded as is. A reply body is a tagged envelope,
`Result` or `Failure`; while a call runs, the worker may also send `Progress` envelopes to the same
reply address with the same correlation id. AMQP properties carry `message_id`, `correlation_id`, `reply_to`,
`content_type` and `expiration`; headers carry the protocol version and the time the caller had left.
No pickle, ever: only msgspec's JSON and MessagePack, which build plain data.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Final

import msgspec

from tchu_rpc import _pydantic
from tchu_rpc.errors import DecodeError, EncodeError, MessageTooLarge

PROTOCOL_VERSION: Final = 1
HEADER_VERSION: Final = "x-tchu-version"
#: The caller's `headers=` and the context it ran under, each a JSON object (`tchu_rpc.context`).
HEADER_HEADERS: Final = "x-tchu-headers"
HEADER_CONTEXT: Final = "x-tchu-context"
#: Seconds the caller had left when it published a call (relative: no clocks are compared).
HEADER_TIMEOUT: Final = "x-tchu-timeout"
HEADER_ERROR: Final = "x-tchu-error"
#: On a dead letter: whether it was a `call` or an `event` (a replay sends it back to that queue).
HEADER_KIND: Final = "x-tchu-kind"
HEADER_TOPIC: Final = "x-tchu-topic"
#: How many earlier deliveries of a message on a classic queue the worker has counted.
HEADER_DELIVERIES: Final = "x-tchu-deliveries"
#: Quorum queues count earlier deliveries themselves in this header (set by the broker).
HEADER_QUORUM_COUNT: Final = "x-delivery-count"
#: On the worker's own copies: the `user_id` RabbitMQ checked on the original publish (the copy's
#: own `user_id` is the worker's login). Trusted only on a copy (`_worker.messages.trusted_copy`).
HEADER_USER_ID: Final = "x-tchu-user-id"
#: The `app_id` of every copy a worker (or `tchu-rpc dead --replay`) publishes of a delivery.
COPY_APP_ID: Final = "tchu-rpc.copy"
#: Set (alone) on a message whose properties or headers could not be decoded (`_amqp.properties`).
HEADER_MALFORMED: Final = "x-tchu-malformed"
#: On an event's retry copy (`_worker.retries`): the one handler to run, as `name@pattern`.
HEADER_RETRY_HANDLER: Final = "x-tchu-retry-handler"
#: On a retry copy: which run of that handler it is (2 for the first retry).
HEADER_ATTEMPT: Final = "x-tchu-attempt"
#: On a retry copy, and its dead-letter copy after the last run: each earlier run's error, in order.
HEADER_ATTEMPT_ERRORS: Final = "x-tchu-attempt-errors"
#: On a call from `tchu-rpc ping`: the worker answers who it is instead of running the handler.
HEADER_PING: Final = "x-tchu-ping"

JSON: Final = "application/json"
MSGPACK: Final = "application/msgpack"


class ErrorInfo(msgspec.Struct, frozen=True, omit_defaults=True):
    """A failure as data: the error's type name, message, optional code and details."""

    type: str
    message: str = ""
    code: str | None = None
    details: Any = None


class Result(msgspec.Struct, frozen=True, tag="result", omit_defaults=True):
    """A reply carrying the handler's return value."""

    result: Any = None


class Failure(msgspec.Struct, frozen=True, tag="error"):
    """A reply carrying the handler's (or the worker's) error."""

    error: ErrorInfo


class Progress(msgspec.Struct, frozen=True, tag="progress", omit_defaults=True):
    """A sign of life from a running call handler, with optional information; not a reply."""

    info: Any = None


def envelope_for(response: Any) -> Any:
    """Return what a reply decodes into when its result must be a `response` (cached per type)."""
    envelope = _ENVELOPES.get(response)
    if envelope is None and _pydantic.is_model(response):
        envelope = _ENVELOPES[response] = _pydantic.Envelope(response)
    if envelope is None:
        typed = msgspec.defstruct(
            "Result", [("result", response, None)], tag="result", frozen=True, omit_defaults=True
        )
        envelope = _ENVELOPES[response] = typed | Failure | Progress
    return envelope


_ENVELOPES: dict[Any, Any] = {Any: Result | Failure | Progress}

Reply = Result | Failure
#: What a caller's reply address receives: the final reply, or progress before it.
Envelope = Result | Failure | Progress


class Codec:
    """Encode and decode bodies of one content type; decoders are built once per target type."""

    __slots__ = ("_decoder_factory", "_decoders", "content_encoding", "content_type", "encode")

    def __init__(
        self,
        content_type: str,
        content_encoding: str,
        encoder: Callable[[Any], bytes],
        decoder_factory: Callable[[Any], Any],
    ) -> None:
        self.content_type = content_type
        self.content_encoding = content_encoding
        self.encode = encoder
        self._decoder_factory = decoder_factory
        self._decoders: dict[Any, Any] = {}

    def decode(self, body: bytes, type: Any = Any) -> Any:
        """Decode `body` into `type`, raising `DecodeError` with the reason."""
        decoder = self._decoders.get(type)
        if decoder is None:
            decoder = self._decoders.setdefault(type, self._decoder_factory(type))
        try:
            return decoder.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise DecodeError(f"cannot decode {self.content_type} body: {exc}") from exc


_ANY_ENVELOPE: Final = Result | Failure | Progress
#: Only types msgspec does not know reach the hook: a pydantic model is dumped, anything else refused.
_enc_hook = _pydantic.dump

_CODECS: Final = {
    JSON: Codec(
        JSON,
        "utf-8",
        msgspec.json.Encoder(enc_hook=_enc_hook).encode,
        _pydantic.decoder_factory(msgspec.json.Decoder, _ANY_ENVELOPE, Result),
    ),
    MSGPACK: Codec(
        MSGPACK,
        "binary",
        msgspec.msgpack.Encoder(enc_hook=_enc_hook).encode,
        _pydantic.decoder_factory(msgspec.msgpack.Decoder, _ANY_ENVELOPE, Result),
    ),
}
_BY_SERIALIZER: Final = {"json": _CODECS[JSON], "msgpack": _CODECS[MSGPACK]}


def codec_for(serializer: str) -> Codec:
    """Return the codec of a serializer name (`json` or `msgpack`)."""
    return _BY_SERIALIZER[serializer]


def codec_of(content_type: str | None) -> Codec:
    """Return the codec for a received content type, or raise `DecodeError`."""
    codec = _CODECS.get(content_type or "")
    if codec is None:
        raise DecodeError(f"unsupported content type {content_type!r}; expected {JSON} or {MSGPACK}")
    return codec


def encode(codec: Codec, value: Any, limit: int) -> bytes:
    """Encode `value`, raising `EncodeError` or `MessageTooLarge` with the reason."""
    try:
        body = codec.encode(value)
    except (TypeError, NotImplementedError, OverflowError, RecursionError, msgspec.EncodeError) as exc:
        raise EncodeError(f"cannot encode {type(value).__name__} as {codec.content_type}: {exc}") from exc
    # JSON has no NaN or infinity: msgspec writes `null` for them, which the receiver would take for
    # None. Only a body with a `null` in it is looked at again (a search in C, no walk otherwise).
    if codec.content_type == JSON and b"null" in body and non_finite(msgspec.to_builtins(value)):
        raise EncodeError(f"cannot encode {type(value).__name__} as JSON: NaN and infinity have no JSON form")
    check_size(len(body), limit)
    return body


def non_finite(value: Any) -> bool:
    """Tell whether `value` holds a float NaN or infinity (in lists, tuples and dict values)."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(non_finite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(non_finite(v) for v in value)
    return False


def check_size(size: int, limit: int) -> None:
    """Raise `MessageTooLarge` when `size` bytes exceed `limit`."""
    if size > limit:
        raise MessageTooLarge(f"body of {size} bytes exceeds the limit of {limit} bytes")


def encode_reply(codec: Codec, reply: Reply, limit: int) -> bytes:
    """Encode a reply; a result that cannot be encoded becomes a `Failure` saying why."""
    try:
        return encode(codec, reply, limit)
    except (EncodeError, MessageTooLarge) as exc:
        failure = Failure(ErrorInfo(type(exc).__name__, f"the handler's result: {exc}"))
        return codec.encode(failure)


def decode_envelope(codec: Codec, body: bytes) -> Envelope:
    """Decode what arrived at a reply address: a reply or a progress message; else `DecodeError`."""
    envelope: Envelope = codec.decode(body, Envelope)
    return envelope


def error_info(exc: BaseException) -> ErrorInfo:
    """Describe an exception as data for the wire."""
    code = getattr(exc, "code", None)
    return ErrorInfo(
        type=type(exc).__name__,
        message=str(getattr(exc, "message", None) or exc),
        code=code if isinstance(code, str) or code is None else str(code),
        details=getattr(exc, "details", None),
    )
