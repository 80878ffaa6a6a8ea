"""Frames read with one `recv` reach py-amqp whole, in order, once; a partial one waits in its buffer."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import amqp
import pytest
from amqp import spec
from amqp.method_framing import frame_handler, frame_writer
from amqp.serialization import dumps
from amqp.transport import TCPTransport

from tchu_rpc._amqp.frames import (
    ack_frame,
    can_read,
    commit_frame,
    publish_frames,
    read_frames,
    requeue_frame,
)
from tchu_rpc.errors import ConnectionLost

Frame = tuple[int, int, bytes]


def frame(frame_type: int, channel: int, payload: bytes) -> bytes:
    header = bytes([frame_type]) + channel.to_bytes(2, "big") + len(payload).to_bytes(4, "big")
    return header + payload + b"\xce"


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    broker, client = socket.socketpair()
    yield broker, client
    broker.close()
    client.close()


class Conn:
    """What `read_frames` uses of a py-amqp connection: its transport and frame handler."""

    def __init__(self, sock: socket.socket) -> None:
        # A real py-amqp transport on the socket, never connected by itself.
        self.transport = TCPTransport.__new__(TCPTransport)
        self.transport.sock = sock
        self.transport.raise_on_initial_eintr = True
        self.transport._setup_transport()
        self.frames: list[Frame] = []
        self.on_inbound_frame = self.frames.append


def test_every_whole_frame_of_one_read_is_dispatched_in_order(pair: Any) -> None:
    broker, client = pair
    conn = Conn(client)
    sent = [(1, 1, b"method"), (2, 1, b"header"), (3, 1, b"body"), (8, 0, b"")]
    broker.sendall(b"".join(frame(*f) for f in sent))

    assert read_frames(conn, client)

    assert conn.frames == sent
    assert conn.transport._read_buffer == b""


def test_a_partial_frame_waits_in_the_transport_buffer_for_the_next_read(pair: Any) -> None:
    broker, client = pair
    conn = Conn(client)
    data = frame(1, 1, b"first") + frame(3, 2, b"second")
    cut = len(frame(1, 1, b"first")) + 9  # in the middle of the second frame's payload

    broker.sendall(data[:cut])
    assert read_frames(conn, client)
    assert conn.frames == [(1, 1, b"first")]
    assert conn.transport._read_buffer == data[len(frame(1, 1, b"first")) : cut]

    broker.sendall(data[cut:])
    assert read_frames(conn, client)
    assert conn.frames == [(1, 1, b"first"), (3, 2, b"second")]
    assert conn.transport._read_buffer == b""


def test_a_callback_reading_through_py_amqp_gets_the_next_frame_and_it_is_not_dispatched_twice(
    pair: Any,
) -> None:
    # Given a callback that waits for an answer the way py-amqp does (basic.cancel -> cancel-ok)
    broker, client = pair
    conn = Conn(client)
    nested: list[Frame] = []

    def on_frame(f: Frame) -> None:
        conn.frames.append(f)
        if f[2] == b"cancel":
            nested.append(conn.transport.read_frame())

    conn.on_inbound_frame = on_frame
    sent = [(1, 1, b"cancel"), (1, 1, b"cancel-ok"), (1, 2, b"after")]
    broker.sendall(b"".join(frame(*f) for f in sent))

    # When the frames are read in one go
    assert read_frames(conn, client)

    # Then the answer went to the waiting callback only, and the frame after it was dispatched
    assert [(t, c, bytes(p)) for t, c, p in nested] == [(1, 1, b"cancel-ok")]
    assert conn.frames == [(1, 1, b"cancel"), (1, 2, b"after")]


def test_nothing_waiting_reads_nothing(pair: Any) -> None:
    _, client = pair
    conn = Conn(client)
    assert not read_frames(conn, client)
    assert conn.frames == []


def test_a_closed_connection_is_lost(pair: Any) -> None:
    broker, client = pair
    broker.close()
    with pytest.raises(ConnectionLost, match="closed the connection"):
        read_frames(Conn(client), client)


def test_a_bad_frame_end_is_a_lost_connection(pair: Any) -> None:
    broker, client = pair
    broker.sendall(frame(1, 1, b"x")[:-1] + b"\x00")
    with pytest.raises(ConnectionLost, match="frame end 0x00"):
        read_frames(Conn(client), client)


@pytest.mark.parametrize("cut", [1, 7, 20, 60, 110])
def test_py_amqp_assembles_a_delivery_split_anywhere(pair: Any, cut: int) -> None:
    # Given a delivery as py-amqp writes it (method, header and body frames), split in two reads
    broker, client = pair
    written: list[bytes] = []
    writer = frame_writer(
        SimpleNamespace(frame_max=131072, bytes_sent=0), SimpleNamespace(write=written.append)
    )
    message = amqp.Message(b'{"n": 1}', content_type="application/json", correlation_id="c1")
    writer(1, 1, spec.Basic.Deliver, dumps("sLbss", ("tag", 7, False, "ex", "rpc.x")), message)
    data = b"".join(bytes(chunk) for chunk in written)
    delivered: list[Any] = []
    conn = Conn(client)
    connection = SimpleNamespace(bytes_recv=0)
    conn.on_inbound_frame = frame_handler(connection, lambda *args: delivered.append(args[3]))

    # When it arrives in two parts
    broker.sendall(data[:cut])
    read_frames(conn, client)
    broker.sendall(data[cut:])
    read_frames(conn, client)

    # Then py-amqp's handler assembled the whole message, once
    assert len(delivered) == 1
    assert delivered[0].body == b'{"n": 1}'
    assert delivered[0].properties["correlation_id"] == "c1"
    assert connection.bytes_recv == 3


def test_plain_tcp_is_read_directly_and_tls_through_py_amqp(pair: Any) -> None:
    _, client = pair
    assert can_read(client)
    context = ssl.create_default_context()
    with socket.socket() as raw, context.wrap_socket(raw, server_hostname="rabbit") as tls:
        assert not can_read(tls)


def py_amqp_frames(method: tuple[int, int], fmt: str, args: tuple[Any, ...], content: Any = None) -> bytes:
    """Encode a method (and its content) the way py-amqp's own writer does."""
    written: list[bytes] = []
    writer = frame_writer(
        SimpleNamespace(frame_max=4096, bytes_sent=0), SimpleNamespace(write=written.append)
    )
    writer(1, 3, method, dumps(fmt, args) if fmt else b"", content)
    return b"".join(bytes(chunk) for chunk in written)


@pytest.mark.parametrize(
    ("body", "properties"),
    [
        # a reply
        (
            b'{"result": 1}',
            {"delivery_mode": 1, "correlation_id": "c" * 32, "content_type": "application/json"},
        ),
        # a request: headers (int and float), expiration, every string property
        (
            b'{"n": 1}',
            {
                "application_headers": {"tchu-version": 1, "tchu-deadline": 1764412345.25},
                "delivery_mode": 1,
                "expiration": "29999",
                "reply_to": "amq.rabbitmq.reply-to.g1h2AA5yZXBseUA0",
                "correlation_id": "a" * 32,
                "message_id": "a" * 32,
                "content_type": "application/x-msgpack",
                "content_encoding": "binary",
            },
        ),
        # everything else the basic class has, non-ASCII text, an empty body
        (
            b"",
            {
                "priority": 5,
                "timestamp": 1764412345,
                "type": "t\u00e9",
                "user_id": "guest",
                "app_id": "app",
                "cluster_id": "c",
                "application_headers": {"x-death": [{"count": 2, "reason": "rejected"}], "b": True},
            },
        ),
        # a body over frame_max: several body frames
        (bytes(range(256)) * 40, {"delivery_mode": 2}),
        # no properties at all
        (b"x", {}),
    ],
)
@pytest.mark.parametrize("mandatory", [True, False])
def test_publish_frames_are_the_bytes_py_amqp_writes(
    body: bytes, properties: dict[str, Any], mandatory: bool
) -> None:
    expected = py_amqp_frames(
        spec.Basic.Publish,
        "Bssbb",
        (0, "tchu_rpc", "rpc.users.get", mandatory, False),
        amqp.Message(body, **properties),
    )
    assert publish_frames(3, 4096, "tchu_rpc", "rpc.users.get", mandatory, body, properties) == expected


def test_ack_requeue_and_commit_frames_are_the_bytes_py_amqp_writes() -> None:
    assert ack_frame(3, 2**40 + 7) == py_amqp_frames(spec.Basic.Ack, "Lb", (2**40 + 7, False))
    assert requeue_frame(3, 2**40 + 7) == py_amqp_frames(spec.Basic.Reject, "Lb", (2**40 + 7, True))
    assert commit_frame(3) == py_amqp_frames(spec.Tx.Commit, "", ())


def test_a_short_string_over_255_bytes_is_refused() -> None:
    with pytest.raises(ValueError, match="over 255 bytes"):
        publish_frames(1, 4096, "", "q", False, b"", {"correlation_id": "\u00e9" * 128})
