"""AMQP messages built byte by byte, for headers and properties that kombu and py-amqp cannot encode.

A field table here is a list of `(key, field)` pairs, each `field` the already-encoded type byte and
value (`field("T", 1.7e12)`, or any bytes: `b"Z\\x00"`), so that a test can write what no client
library would: timestamps past year 9999, unknown type bytes, keys that are not UTF-8, tables nested
2,000 deep or declaring more bytes than their frame holds. Letters are RabbitMQ's (the AMQP 0-9-1
errata): `s` is a signed 16-bit integer, `l` a signed 64-bit one; py-amqp reads `U` and `L` too.

`RawPublisher` writes these frames on a py-amqp channel in confirm mode (`transport.write`), the way
any other client on the broker could; `take_all` reads messages back without letting py-amqp decode
their properties.

What RabbitMQ 3.10 refuses at publish (seen here): a table holding `U`, an unknown type byte, a NaN
or infinite `f`/`d`, or a length past its frame (541 INTERNAL_ERROR, the connection closed); `CC`
or `BCC` that is not an array (406), a `user_id` other than the login, an `expiration` that is not
a non-negative integer (or is as large as 10**20), a `delivery_mode` other than 1 or 2, a `reply_to` of
direct reply-to from a channel not consuming it (406, the channel closed). It takes timestamps
past year 9999, tables 2,000 deep and decimals of any scale.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

import amqp
from conftest import BrokerTarget

#: (flag, name, kind) of each basic property, in the order of the content header (`s` a short string,
#: `B` an octet, `Q` a 64-bit timestamp, `F` a field table).
PROPERTIES = (
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
_FIXED = {
    "b": ">b",
    "B": ">B",
    "s": ">h",
    "U": ">h",
    "u": ">H",
    "I": ">i",
    "i": ">I",
    "l": ">q",
    "L": ">q",
    "f": ">f",
    "d": ">d",
}
Table = Sequence[tuple[bytes | str, bytes]]


def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def shortstr(value: bytes | str) -> bytes:
    data = _bytes(value)
    assert len(data) <= 255, f"short string of {len(data)} bytes"
    return bytes((len(data),)) + data


def longstr(value: bytes | str) -> bytes:
    data = _bytes(value)
    return struct.pack(">I", len(data)) + data


def field(kind: str, value: Any) -> bytes:
    """Return a field of AMQP type `kind` holding `value`, unchecked (out-of-range values welcome).

    `T` takes seconds since the epoch (wrapped to 64 bits: -1 is 2**64 - 1); `D` takes
    `(scale, unscaled)`; `F` a `Table`; `A` a list of fields; `S`/`x` bytes or str; `V` nothing.
    """
    if kind in _FIXED:
        return kind.encode() + struct.pack(_FIXED[kind], value)
    if kind in "Sx":
        return kind.encode() + longstr(value)
    if kind == "t":
        return b"t" + bytes((1 if value else 0,))
    if kind == "T":
        return b"T" + struct.pack(">Q", int(value) % 2**64)
    if kind == "D":
        scale, unscaled = value
        return b"D" + struct.pack(">Bi", scale, unscaled)
    if kind == "F":
        return b"F" + table(value)
    if kind == "A":
        return b"A" + longstr(b"".join(value))
    if kind == "V":
        return b"V"
    raise ValueError(f"no such field type {kind!r}")


def table(entries: Table, declared: int | None = None) -> bytes:
    """Return a field table (its 32-bit length, then key-value pairs); `declared` overrides the length."""
    payload = b"".join(shortstr(key) + value for key, value in entries)
    return struct.pack(">I", len(payload) if declared is None else declared) + payload


def nested(depth: int, leaf: bytes) -> bytes:
    """Return a field of tables nested `depth` deep around `leaf`, built without recursion."""
    value = leaf
    for _ in range(depth):
        value = field("F", [("n", value)])
    return value


def decimal_field(value: Decimal) -> bytes:
    """Return a `D` field for `value` (its exponent as the scale; may not fit, which is the point)."""
    sign, digits, exponent = value.as_tuple()
    unscaled = int("".join(map(str, digits)) or "0") * (-1 if sign else 1)
    return field("D", (-int(exponent), unscaled))


def swapped(marker: str, key: bytes | str, hostile: bytes) -> tuple[tuple[bytes, bytes], bytes, bytes]:
    """Return a table entry the broker takes, and the (placeholder, hostile) bytes to swap in transit.

    The entry is `marker` holding an `x` field of zeros, sized so that the hostile entry (`key` with
    the already-encoded field `hostile`) has its exact length: `FaultProxy.rewrite_headers` swaps
    one for the other in the content header the broker delivers, with no frame size to fix.
    """
    marker_key = _bytes(marker)
    key = _bytes(key)
    fixed = 1 + len(marker_key) + 5  # the placeholder with no filler
    wanted = 1 + len(key) + len(hostile)
    if wanted < fixed:
        key, wanted = key + b"_" * (fixed - wanted), fixed
    filler = wanted - fixed
    entry = (marker_key, field("x", b"\0" * filler))
    placeholder = shortstr(marker_key) + entry[1]
    return entry, placeholder, shortstr(key) + hostile


def content_header(body_size: int, properties: dict[str, Any], headers: bytes | None = None) -> bytes:
    """Return a basic content header's payload; `headers` is an encoded table (`table`) if given.

    Property values go on the wire as given: short strings as bytes or str (not checked for UTF-8),
    octets and the timestamp as ints.
    """
    flags, values = 0, []
    for flag, name, kind in PROPERTIES:
        value = headers if name == "application_headers" else properties.get(name)
        if value is None:
            continue
        flags |= flag
        if kind == "s":
            values.append(shortstr(value))
        elif kind == "B":
            values.append(struct.pack(">B", value))
        elif kind == "Q":
            values.append(struct.pack(">Q", value % 2**64))
        else:
            values.append(value)
    return struct.pack(">HHQH", 60, 0, body_size, flags) + b"".join(values)


def frame(frame_type: int, channel: int, payload: bytes) -> bytes:
    return struct.pack(">BHI", frame_type, channel, len(payload)) + payload + b"\xce"


def publish_frames(
    channel: int, frame_max: int, exchange: str, routing_key: str, header: bytes, body: bytes
) -> bytes:
    """Return the frames of a `basic.publish` (not mandatory) with content `header` and `body`."""
    method = struct.pack(">HHH", 60, 40, 0) + shortstr(exchange) + shortstr(routing_key) + b"\x00"
    frames = [frame(1, channel, method), frame(2, channel, header)]
    size = frame_max - 8
    frames += [frame(3, channel, body[i : i + size]) for i in range(0, len(body), size)]
    return b"".join(frames)


class RawPublisher:
    """Publish hand-built messages on a py-amqp connection of its own, with publisher confirms."""

    def __init__(self, target: BrokerTarget) -> None:
        self.conn = connect(target)
        self.channel: Any = None
        self.open_channel()

    def open_channel(self) -> None:
        self.channel = self.conn.channel()
        self.channel.confirm_select()
        self.channel.events["basic_ack"].add(lambda tag, multiple: self._confirm(tag, multiple, True))
        self.channel.events["basic_nack"].add(lambda tag, multiple: self._confirm(tag, multiple, False))
        self.sent = self.nacked = 0
        self.unconfirmed: set[int] = set()  # tags; RabbitMQ confirms out of order across queues

    def publish(self, exchange: str, routing_key: str, header: bytes, body: bytes) -> None:
        frames = publish_frames(
            self.channel.channel_id, self.conn.frame_max, exchange, routing_key, header, body
        )
        self.conn.transport.write(frames)
        self.sent += 1
        self.unconfirmed.add(self.sent)

    def publish_many(self, messages: Iterable[tuple[str, str, bytes, bytes]], timeout: float = 20) -> None:
        """Publish each `(exchange, routing_key, header, body)`; wait until the broker confirmed all.

        Raises AssertionError if the broker refused one (a nack, or a channel or connection closed).
        """
        for message in messages:
            self.publish(*message)
        deadline = time.monotonic() + timeout
        while self.unconfirmed:
            assert time.monotonic() < deadline, f"{len(self.unconfirmed)} publishes unconfirmed"
            try:
                self.conn.drain_events(timeout=0.2)
            except TimeoutError:
                pass
        assert not self.nacked, f"the broker refused {self.nacked} of {self.sent} publishes"

    def _confirm(self, tag: int, multiple: bool, ack: bool) -> None:
        confirmed = {t for t in self.unconfirmed if t <= tag} if multiple else {tag}
        self.unconfirmed -= confirmed
        if not ack:
            self.nacked += len(confirmed)

    def close(self) -> None:
        _close(self.conn)


def _close(conn: amqp.Connection) -> None:
    try:
        conn.close()
    except Exception:
        conn.collect()


def connect(target: BrokerTarget) -> amqp.Connection:
    """Return a connected py-amqp connection to the broker (`conftest.parse_broker_url`)."""
    conn = amqp.Connection(
        f"{target.host}:{target.port}",
        userid=target.user,
        password=target.password,
        virtual_host=target.vhost,
        connect_timeout=5,
    )
    conn.connect()
    return conn


def take_all(target: BrokerTarget, queue: str, limit: int = 100_000) -> list[tuple[bytes, bytes]]:
    """Take every message now in `queue` as (raw content header, body), whatever its headers hold.

    py-amqp never sees the properties (it is handed a header without any), so that a table it
    cannot decode (a timestamp past year 9999) cannot fail the read.
    """
    conn = connect(target)
    headers: list[bytes] = []
    strict = conn.on_inbound_frame

    def on_frame(frame: tuple[int, int, Any]) -> Any:
        frame_type, channel, payload = frame
        if frame_type == 2:
            headers.append(bytes(payload))
            payload = bytes(payload[:12]) + b"\0\0"  # class, weight, body size; no property flags
        return strict((frame_type, channel, payload))

    conn.on_inbound_frame = on_frame
    bodies: list[bytes] = []
    try:
        channel = conn.channel()
        while len(bodies) < limit and (message := channel.basic_get(queue, no_ack=True)) is not None:
            body = message.body
            bodies.append(body if isinstance(body, bytes) else body.encode("utf-8", "surrogateescape"))
    finally:
        _close(conn)
    return list(zip(headers, bodies, strict=True))
