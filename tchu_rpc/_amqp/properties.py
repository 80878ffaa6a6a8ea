"""Read AMQP message properties that py-amqp cannot decode instead of failing the connection.

py-amqp turns a message's properties into Python while it parses the frame: short strings as strict
UTF-8, header tables field by field (a timestamp past year 9999 raises `ValueError`, an unknown
field type `FrameSyntaxError`, deep nesting `RecursionError`, a table longer than its frame
`struct.error`). So one message a publisher crafted makes `drain_events` raise: the connection drops
before any consumer sees the message, and the broker redelivers it after every reconnection, for
ever on a classic queue (the same class of bug as py-amqp#323). `tolerate(conn)` wraps one py-amqp
connection's frame handler: a content header that fails to decode, for whatever reason, is decoded
again leniently (`decode`): undecodable bytes spelled `\\xNN` (`printable`), a header table that
cannot be read dropped whole, and what could not be decoded (naming the field) said in the
`HEADER_MALFORMED` header; then it is handed to py-amqp again, and the worker dead-letters such a
message once (`Worker._receive`). Only tchu_rpc's own connections are touched: py-amqp's module tables
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
#: The longest reason kept in `MALFORMED`.
_REASON_CHARS: Final = 1000


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
        except Exception as exc:
            return recover(frame, exc)

    def recover(frame: tuple[int, int, Any], exc: Exception) -> Any:
        frame_type, channel, buf = frame
        if frame_type != 2 or _decodes(buf):
            raise exc  # not the header's properties: a bug elsewhere, or a consumer's callback
        # py-amqp keeps the message waiting for its header: the same header, made decodable
        return strict((2, channel, _decodable(buf)))

    connection.tchu_strict = strict  # py-amqp's own, for `frames.read_frames`
    connection.tchu_recover = recover  # for `frames.read_frames`, when py-amqp's own handler raised
    connection.on_inbound_frame = on_inbound_frame


def _decodes(buf: bytes) -> bool:
    try:
        _strict(buf, _HEADER_PROPERTIES)
    except Exception:
        return False
    return True


def _decodable(buf: bytes) -> bytes:
    props, _ = _tolerant(buf, _HEADER_PROPERTIES)
    for name, value in props.items():
        props[name] = printable(value)
    (body_size,) = unpack_from(">Q", buf, 4)
    try:
        return content_header(body_size, props)
    except Exception as exc:  # py-amqp reads a table ~600 deep, and cannot write it again
        reason = props["application_headers"][MALFORMED]
        again = f"{reason}; the header table cannot be encoded again ({type(exc).__name__})"
        props["application_headers"] = {MALFORMED: again[:_REASON_CHARS]}
        return content_header(body_size, props)


def decode(buf: bytes, offset: int) -> tuple[dict[str, Any], int]:
    """Decode basic properties like py-amqp; keep what it cannot decode instead of raising."""
    try:
        return _strict(buf, offset)  # type: ignore[no-any-return]
    except Exception:
        return _tolerant(buf, offset)


def _tolerant(buf: bytes, offset: int) -> tuple[dict[str, Any], int]:
    """Decode what can be decoded; say what could not in `MALFORMED`."""
    properties: dict[str, Any] = {}
    reasons: list[str] = []
    try:
        (flags,) = unpack_from(">H", buf, offset)
        offset += 2
        for flag, name, kind in FIELDS:
            if flags & flag:
                offset = _field(buf, offset, name, kind, properties, reasons)
    except Exception as exc:  # cut short: what follows cannot be placed
        reasons.append(f"properties cut short ({type(exc).__name__}: {exc})")
    headers = properties.setdefault("application_headers", {})
    headers[MALFORMED] = "; ".join(reasons)[:_REASON_CHARS]
    return properties, offset


def _field(buf: bytes, offset: int, name: str, kind: str, into: dict[str, Any], reasons: list[str]) -> int:
    """Decode the property `name` at `offset` into `into`; return the offset after it."""
    size: int
    if kind == "s":
        size = buf[offset]
        raw = bytes(buf[offset + 1 : offset + 1 + size])
        into[name] = raw.decode("utf-8", "surrogateescape")
        if _escaped(into[name]):
            reasons.append(f"property {name} is not UTF-8: {raw[:64]!r}")
        return offset + 1 + size
    if kind == "B":
        into[name] = buf[offset]
        return offset + 1
    if kind == "Q":
        (into[name],) = unpack_from(">Q", buf, offset)
        return offset + 8
    (size,) = unpack_from(">I", buf, offset)
    end = offset + 4 + size
    if end > len(buf):
        raise ValueError(f"the header table claims {size} bytes, more than its frame holds")
    try:  # py-amqp reads a table's strings leniently already (bytes where not UTF-8)
        (into[name],), _ = serialization.loads("F", buf, offset)
    except Exception:  # dropped whole: what it says cannot be trusted in part
        reasons.append(f"header {_culprit(buf, offset + 4, end)}")
    return end


def _culprit(buf: bytes, offset: int, end: int) -> str:
    """Name the first entry of the table at `offset`..`end` that py-amqp cannot decode, and why."""
    key: Any = "?"
    try:
        while offset < end:
            size = buf[offset]
            key = bytes(buf[offset + 1 : offset + 1 + size]).decode("utf-8", "backslashreplace")
            offset = serialization._read_item(buf, offset + 1 + size)[1]
    except Exception as exc:
        return f"{key[:64]!r} cannot be decoded: {type(exc).__name__}: {str(exc)[:200]}"
    return "table cannot be decoded"


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
