"""Read AMQP message properties that are not valid UTF-8 instead of failing the connection.

py-amqp decodes a message's short-string properties (content type, correlation id, ...) as strict
UTF-8 while it parses the frame, so one message with a stray byte there makes `drain_events` raise:
the connection drops before any consumer sees the message, and the broker redelivers it after every
reconnection, for ever on a classic queue (the same class of bug as py-amqp#323). `tolerate(conn)`
wraps one py-amqp connection's frame handler: a content header that fails to decode is decoded again
leniently (`decode`), its undecodable bytes spelled `\\xNN` (`printable`), what could not be decoded
said in the `HEADER_MALFORMED` header, and handed to py-amqp again; the worker dead-letters such a
message (`Worker._receive`). Only tchu_rpc's own connections are touched: py-amqp's module tables
stay as they are, so any other connection in the process decodes exactly as without tchu_rpc.
"""

from __future__ import annotations

from struct import unpack_from
from typing import Any, Final

from amqp import serialization

from tchu_rpc._amqp.frames import FIELDS, MAX_SHORTSTR, content_header
from tchu_rpc.wire import HEADER_MALFORMED

#: The method of `connection.blocked` (class 10, method 60), whose argument is the broker's reason.
_BLOCKED: Final = b"\x00\x0a\x00\x3c"
#: Where the properties start in a content header frame (class, weight, body size come first).
_HEADER_PROPERTIES: Final = 12

#: Header set (alone) when a message's header table could not be decoded.
MALFORMED: Final = HEADER_MALFORMED

_strict = serialization.decode_properties_basic


def tolerate(connection: Any) -> None:
    """Make py-amqp `connection` take messages whose properties are not UTF-8 (see the module).

    It also keeps the reason of a `connection.blocked` in `connection.tchu_blocked_reason`: py-amqp
    reads that method without its argument and passes a placeholder to `on_blocked`.
    """
    strict = connection.on_inbound_frame

    def on_inbound_frame(frame: tuple[int, int, Any]) -> Any:
        if frame[1] == 0 and frame[0] == 1 and frame[2][:4] == _BLOCKED:
            # py-amqp reads connection.blocked without its argument (the broker's reason)
            (size,) = unpack_from(">B", frame[2], 4)
            connection.tchu_blocked_reason = bytes(frame[2][5 : 5 + size]).decode("utf-8", "replace")
        try:
            return strict(frame)
        except UnicodeDecodeError:
            frame_type, channel, buf = frame
            if frame_type != 2:
                raise
            # py-amqp keeps the message waiting for its header: the same header, made decodable
            return strict((2, channel, _decodable(buf)))

    connection.tchu_strict = strict  # py-amqp's own, for `frames.read_frames`
    connection.on_inbound_frame = on_inbound_frame


def _decodable(buf: bytes) -> bytes:
    props, _ = _tolerant(buf, _HEADER_PROPERTIES)
    for name, value in props.items():
        props[name] = printable(value)
    (body_size,) = unpack_from(">Q", buf, 4)
    return content_header(body_size, props)


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
