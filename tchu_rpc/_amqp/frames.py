"""AMQP frames on the hot path: read them with one system call, write the usual ones ourselves.

py-amqp reads each frame with two or more `recv` calls (the header, then the payload and frame
end) and switches the socket's timeout before and after each frame (`having_timeout`: a context
manager and two `ioctl`s); a worker at 8 calls in flight made 13 `recv` and 10 timeout switches per
call that way. Here one non-blocking `recv` takes all that is waiting, each whole frame goes to
py-amqp's frame handler (`on_inbound_frame`, as its own `blocking_read` does), and a partial frame
stays in the transport's read buffer (`_read_buffer`), where py-amqp's own reads look first: a
callback that waits for an answer (`basic.cancel` waiting for its cancel-ok) reads through py-amqp
while frames of this read are still undispatched, so the rest is put there before each frame is.

Writing: `publish_frames`, `ack_frame`, `requeue_frame` and `commit_frame` encode a `basic.publish`
with its content, a `basic.ack`, a `basic.reject` and a `tx.commit` directly; py-amqp builds a
`Message`, serializes its arguments and properties through generic format strings and writes
through a shared buffer under a lock, several times the work for these fixed layouts. AMQP tables
(headers) still go through py-amqp's encoder.

Reading directly is for plain TCP only (`can_read`): a TLS socket decrypts in records and takes no
`recv` flags, and Windows has no `MSG_DONTWAIT`; the loop reads those through py-amqp.
"""

from __future__ import annotations

import socket
import ssl
import struct
from typing import Any, Final

from amqp.serialization import dumps

from tchu_rpc.errors import ConnectionLost

#: The longest AMQP short string, in bytes.
MAX_SHORTSTR: Final = 255
#: AMQP 0-9-1 basic properties in flag order: (flag, name, kind); s = short string, B = octet,
#: Q = 64-bit timestamp, F = field table.
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

#: At most this much per read: a 1 MB message takes several turns of the loop, and a read of many
#: small frames copies what follows each frame once (see `read_frames`).
_READ_SIZE = 64 * 1024
_HEADER = struct.Struct(">BHI")  # frame type, channel, payload size
_FRAME_END = 0xCE
_DONTWAIT: int | None = getattr(socket, "MSG_DONTWAIT", None)


def can_read(sock: Any) -> bool:
    """Tell whether `read_frames` can read `sock` (plain TCP where `recv` takes MSG_DONTWAIT)."""
    return _DONTWAIT is not None and not isinstance(sock, ssl.SSLSocket)


def read_frames(conn: Any, sock: socket.socket) -> bool:
    """Dispatch the whole frames waiting on `sock` to py-amqp connection `conn`.

    Returns False if nothing was waiting (another thread read it first). Raises `ConnectionLost`
    when the broker closed the connection or sent a malformed frame.
    """
    try:
        data = sock.recv(_READ_SIZE, _DONTWAIT or 0)
    except BlockingIOError:
        return False
    if not data:
        raise ConnectionLost("the broker closed the connection")
    transport = conn.transport
    buffer: bytes = transport._read_buffer + data if transport._read_buffer else data
    tolerant = conn.on_inbound_frame
    # py-amqp's own handler, not `properties.tolerate`'s wrapper around it: one call per frame less,
    # and the wrapper only for the rare header py-amqp cannot decode.
    on_frame = conn.__dict__.get("tchu_strict", tolerant)
    while len(buffer) > 7:
        frame_type, channel, size = _HEADER.unpack_from(buffer)
        end = 7 + size
        if len(buffer) <= end:
            break  # the rest of this frame is still on its way
        if buffer[end] != _FRAME_END:
            raise ConnectionLost(f"malformed frame from the broker: frame end {buffer[end]:#04x}")
        transport._read_buffer = buffer[end + 1 :]
        frame = (frame_type, channel, buffer[7:end])
        try:
            (on_frame if channel else tolerant)(frame)  # the connection's own frames, all of them
        except Exception as exc:
            recover = conn.__dict__.get("tchu_recover")
            if recover is None:
                raise
            recover(frame, exc)  # a header py-amqp cannot decode, made decodable; else raises `exc`
        buffer = transport._read_buffer  # a callback may have read on through py-amqp
    transport._read_buffer = buffer
    return True


_PUBLISH = struct.pack(">HHH", 60, 40, 0)  # basic.publish, ticket 0
_CONTENT_HEADER = struct.Struct(">HHQH")  # class, weight, body size, property flags
_ACK = struct.Struct(">BHIHHQBB")  # a whole basic.ack (or basic.reject) frame


def _frame(frame_type: int, channel: int, payload: bytes) -> bytes:
    return _HEADER.pack(frame_type, channel, len(payload)) + payload + b"\xce"


def _shortstr(value: str) -> bytes:
    data = value.encode("utf-8", "surrogatepass")
    if len(data) > MAX_SHORTSTR:
        raise ValueError(f"AMQP short string over 255 bytes: {value[:40]!r}...")
    return bytes((len(data),)) + data


def _property(kind: str, value: Any) -> bytes:
    if kind == "s":
        return _shortstr(value)
    if kind == "B":
        return bytes((value,))
    if kind == "Q":
        return struct.pack(">Q", value)
    table: bytes = dumps("F", (value,))  # py-amqp's table encoding, every field type it knows
    return table


def publish_frames(
    channel: int,
    frame_max: int,
    exchange: str,
    routing_key: str,
    mandatory: bool,
    body: bytes,
    properties: dict[str, Any],
) -> bytes:
    """Return the frames of a `basic.publish` of `body` with AMQP `properties` (py-amqp's names)."""
    method = _PUBLISH + _shortstr(exchange) + _shortstr(routing_key) + (b"\x01" if mandatory else b"\x00")
    header = content_header(len(body), properties)
    frames = [_frame(1, channel, method), _frame(2, channel, header)]
    size = frame_max - 8
    frames += [_frame(3, channel, body[i : i + size]) for i in range(0, len(body), size)]
    return b"".join(frames)


def content_header(body_size: int, properties: dict[str, Any]) -> bytes:
    """Return the payload of a basic content header frame: body size and AMQP `properties`."""
    flags = 0
    values = []
    for flag, name, kind in FIELDS:
        value = properties.get(name)
        if value is not None:
            flags |= flag
            values.append(_property(kind, value))
    return _CONTENT_HEADER.pack(60, 0, body_size, flags) + b"".join(values)


def ack_frame(channel: int, delivery_tag: int) -> bytes:
    """Return the frame of a `basic.ack` of one delivery."""
    return _ACK.pack(1, channel, 13, 60, 80, delivery_tag, 0, 0xCE)


def requeue_frame(channel: int, delivery_tag: int) -> bytes:
    """Return the frame of a `basic.reject` of one delivery, with requeue."""
    return _ACK.pack(1, channel, 13, 60, 90, delivery_tag, 1, 0xCE)


def commit_frame(channel: int) -> bytes:
    """Return the frame of a `tx.commit`."""
    return _frame(1, channel, struct.pack(">HH", 90, 20))
