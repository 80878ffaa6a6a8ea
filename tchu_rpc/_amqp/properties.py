"""Read AMQP message properties that are not valid UTF-8 instead of failing the connection.

py-amqp decodes a message's short-string properties (content type, correlation id, ...) as strict
UTF-8 while it parses the frame, so one message with a stray byte there makes `drain_events` raise:
the connection drops before any consumer sees the message, and the broker redelivers it after every
reconnection, for ever on a classic queue (the same class of bug as py-amqp#323). `install()` makes
py-amqp fall back, for such a message only, to a parser that keeps the undecodable bytes as lone
surrogates (`surrogateescape`) and says what it could not decode in the message's `MALFORMED`
header, by which the worker dead-letters the message (`Worker._receive`). `printable` turns such a
value back into text that can be published and logged.

It is process-wide (py-amqp keeps its property parsers in a module table) and only changes what
happens to frames that would otherwise have failed the connection.
"""

from __future__ import annotations

from struct import unpack_from
from typing import Any, Final

from amqp import serialization
from amqp.spec import Basic

from tchu_rpc.wire import HEADER_MALFORMED

#: Header set (alone) when a message's header table could not be decoded.
MALFORMED: Final = HEADER_MALFORMED
#: The longest AMQP short string, in bytes.
MAX_SHORTSTR: Final = 255

#: AMQP 0-9-1 basic properties in flag order: (flag, name, kind); s = short string, B = octet,
#: Q = 64-bit timestamp, F = field table. Also what `frames` encodes.
FIELDS: Final = (
    (0x8000, "content_type", "s"),
    (0x4000, "content_encoding", "s"),
    (0x2000, "application_headers", "F"),
    (0x1000, "delivery_mode", "B"),
    (0x0800, "priority", "B"),
    (0x0400, "correlation_id", "s"),
    (0x0200, "reply_to", "s"),
    (0x0100, "expiration", "s"),
    (0x0080, "message_id", "s"),
    (0x0040, "timestamp", "Q"),
    (0x0020, "type", "s"),
    (0x0010, "user_id", "s"),
    (0x0008, "app_id", "s"),
    (0x0004, "cluster_id", "s"),
)
_strict = serialization.decode_properties_basic


def install() -> None:
    """Make py-amqp parse basic properties with `decode`; safe to call again."""
    serialization.PROPERTY_CLASSES[Basic.CLASS_ID] = decode


def decode(buf: bytes, offset: int) -> tuple[dict[str, Any], int]:
    """Decode basic properties like py-amqp; keep what is not UTF-8 instead of raising."""
    try:
        return _strict(buf, offset)  # type: ignore[no-any-return]
    except UnicodeDecodeError:
        return _tolerant(buf, offset)


def _tolerant(buf: bytes, offset: int) -> tuple[dict[str, Any], int]:
    properties: dict[str, Any] = {}
    reasons = []
    (flags,) = unpack_from(">H", buf, offset)
    offset += 2
    for flag, name, kind in FIELDS:
        if not flags & flag:
            continue
        if kind == "s":
            (size,) = unpack_from(">B", buf, offset)
            raw = bytes(buf[offset + 1 : offset + 1 + size])
            properties[name] = raw.decode("utf-8", "surrogateescape")
            if _escaped(properties[name]):
                reasons.append(f"property {name} is not UTF-8: {raw!r}")
            offset += 1 + size
        elif kind == "B":
            (properties[name],) = unpack_from(">B", buf, offset)
            offset += 1
        elif kind == "Q":
            (properties[name],) = unpack_from(">Q", buf, offset)
            offset += 8
        else:
            # py-amqp reads a table's strings leniently already (bytes where not UTF-8)
            (properties[name],), offset = serialization.loads("F", buf, offset)
    headers = properties.setdefault("application_headers", {})
    headers[MALFORMED] = "; ".join(reasons)
    return properties, offset


def printable(value: Any) -> Any:
    """Return `value` with undecodable bytes spelled as `\\xNN`, so that it can be sent and logged.

    Spelled out, a property may no longer fit an AMQP short string (255 bytes): it is cut to fit,
    ending in `...`, so that a copy of the message can still be published.
    """
    if isinstance(value, str) and _escaped(value):
        spelled = value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        data = spelled.encode("utf-8")
        if len(data) > MAX_SHORTSTR:
            spelled = data[: MAX_SHORTSTR - 3].decode("utf-8", "ignore") + "..."
        return spelled
    return value


def _escaped(value: str) -> bool:
    if value.isascii():
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
