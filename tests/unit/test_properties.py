"""Basic properties that are not UTF-8 are read, marked and made printable instead of failing."""

from __future__ import annotations

import struct
from types import SimpleNamespace
from typing import Any

import amqp
import pytest
from amqp import serialization
from amqp.method_framing import frame_handler

from tchu_rpc._amqp import properties


def _frame(**props: Any) -> bytes:
    return bytes(amqp.Message(b"", **props)._serialize_properties())


def test_valid_properties_decode_exactly_as_py_amqp_does() -> None:
    buf = _frame(
        content_type="application/json",
        correlation_id="abc",
        reply_to="amq.rabbitmq.reply-to.x",
        delivery_mode=2,
        priority=3,
        timestamp=1_700_000_000,
        application_headers={"x-tchu-version": 1, "s": "é"},
        message_id="m-1",
    )
    assert properties.decode(buf, 0) == serialization.decode_properties_basic(buf, 0)


def test_short_string_that_is_not_utf8_is_kept_and_the_message_marked() -> None:
    buf = _frame(content_type=b"application/\xff", correlation_id=b"id-\xfe", delivery_mode=1)

    props, offset = properties.decode(buf, 0)

    assert offset == len(buf)
    assert props["delivery_mode"] == 1
    assert properties.printable(props["content_type"]) == "application/\\xff"
    assert properties.printable(props["correlation_id"]) == "id-\\xfe"
    reason = props["application_headers"][properties.MALFORMED]
    assert "content_type" in reason and "correlation_id" in reason


def test_a_marked_message_keeps_its_headers() -> None:
    buf = _frame(content_type=b"\xff", application_headers={"x-tchu-version": 1})

    props, _ = properties.decode(buf, 0)

    assert props["application_headers"]["x-tchu-version"] == 1
    assert "content_type" in props["application_headers"][properties.MALFORMED]


def test_printable_leaves_valid_text_and_other_values_alone() -> None:
    assert properties.printable("café") == "café"
    assert properties.printable(None) is None
    assert properties.printable(5) == 5


def _deliver(on_frame: Any, header_properties: bytes) -> None:
    """Feed one basic.deliver of a 4-byte body through a py-amqp frame handler."""
    on_frame((1, 1, struct.pack(">HH", 60, 60)))  # its arguments are parsed later, by the channel
    on_frame((2, 1, struct.pack(">HHQ", 60, 0, 4) + header_properties))
    on_frame((3, 1, b"body"))


def _connection(delivered: list[Any]) -> Any:
    """A py-amqp frame handler as a connection has it, delivering whole messages to `delivered`."""
    conn = SimpleNamespace(bytes_recv=0)
    conn.on_inbound_frame = frame_handler(conn, lambda channel, sig, args, msg: delivered.append(msg))
    return conn


def test_a_tolerant_connection_takes_a_header_that_is_not_utf8_and_marks_the_message() -> None:
    # Given a connection's frame handler made tolerant
    delivered: list[Any] = []
    conn = _connection(delivered)
    properties.tolerate(conn)

    # When a message arrives whose content type is not UTF-8, then a valid one
    _deliver(conn.on_inbound_frame, _frame(content_type=b"app/\xff", delivery_mode=2))
    _deliver(conn.on_inbound_frame, _frame(content_type="application/json"))

    # Then both are delivered: the first spelled out and marked, the second as sent
    bad, good = delivered
    assert bad.properties["content_type"] == "app/\\xff"
    assert bad.properties["delivery_mode"] == 2
    assert "content_type" in bad.properties["application_headers"][properties.MALFORMED]
    assert bad.body == b"body"
    assert good.properties == {"content_type": "application/json"}


def test_tolerating_one_connection_leaves_py_amqp_strict_for_every_other() -> None:
    # Given one tolerant connection
    properties.tolerate(_connection([]))

    # Then py-amqp's own tables are untouched, and another connection still fails on such a header
    assert serialization.PROPERTY_CLASSES[60] is serialization.decode_properties_basic
    with pytest.raises(UnicodeDecodeError):
        _deliver(_connection([]).on_inbound_frame, _frame(content_type=b"\xff"))


def test_printable_cuts_a_spelled_out_property_to_fit_a_short_string() -> None:
    buf = _frame(correlation_id=b"\xff" * 200)
    props, _ = properties.decode(buf, 0)

    spelled = properties.printable(props["correlation_id"])

    assert len(spelled.encode()) <= properties.MAX_SHORTSTR
    assert spelled.startswith("\\xff\\xff") and spelled.endswith("...")


# -- header tables py-amqp cannot turn into Python ---------------------------------------------
def _shortstr(value: bytes) -> bytes:
    return bytes((len(value),)) + value


def _table(*entries: bytes, claimed: int | None = None) -> bytes:
    """A field table of raw entries (key, type, value), claiming `claimed` bytes (default: its size)."""
    body = b"".join(entries)
    return struct.pack(">I", len(body) if claimed is None else claimed) + body


def _entry(key: bytes, kind: bytes, value: bytes) -> bytes:
    return _shortstr(key) + kind + value


def _with_headers(table: bytes, correlation_id: bytes = b"c-1") -> bytes:
    """Basic properties: content type, headers = `table` (raw), correlation id."""
    flags = 0x8000 | 0x2000 | 0x0400
    return struct.pack(">H", flags) + _shortstr(b"application/json") + table + _shortstr(correlation_id)


def _nested(depth: int) -> bytes:
    value = _table(_entry(b"leaf", b"t", b"\x01"))
    for _ in range(depth):
        value = _table(_entry(b"n", b"F", value))
    return value


_MS_AS_SECONDS = struct.pack(">Q", 1_700_000_000_000)  # milliseconds written as seconds: year 55840
#: name -> (the table, the field its reason names)
HOSTILE_TABLES = {
    "timestamp past 9999": (
        _table(_entry(b"ok", b"t", b"\x01"), _entry(b"sent", b"T", _MS_AS_SECONDS)),
        "sent",
    ),
    "unknown field type": (_table(_entry(b"odd", b"Z", b"\x00\x00")), "odd"),
    "deep nesting": (_table(_entry(b"deep", b"F", _nested(3000))), "deep"),
    "array with a bad item": (
        _table(_entry(b"list", b"A", struct.pack(">I", 9) + b"T" + _MS_AS_SECONDS)),
        "list",
    ),
}


@pytest.mark.parametrize("name", HOSTILE_TABLES)
def test_a_header_table_py_amqp_cannot_decode_is_dropped_and_named(name: str) -> None:
    table, key = HOSTILE_TABLES[name]
    buf = _with_headers(table)
    with pytest.raises(Exception):  # noqa: B017 - py-amqp raises whatever its parse meets
        serialization.decode_properties_basic(buf, 0)

    props, offset = properties.decode(buf, 0)

    # Then the other properties are read, the table is dropped whole, and the reason names the field
    assert offset == len(buf)
    assert props["content_type"] == "application/json" and props["correlation_id"] == "c-1"
    headers = props["application_headers"]
    assert list(headers) == [properties.MALFORMED]
    assert headers[properties.MALFORMED].startswith(f"header {key!r} cannot be decoded: ")


def test_a_header_table_longer_than_its_frame_is_reported_and_what_follows_is_not_guessed() -> None:
    buf = _with_headers(_table(_entry(b"a", b"t", b"\x01"), claimed=10_000))
    props, _ = properties.decode(buf, 0)
    assert props["content_type"] == "application/json"
    assert "correlation_id" not in props
    assert "more than its frame holds" in props["application_headers"][properties.MALFORMED]


@pytest.mark.parametrize("name", HOSTILE_TABLES)
def test_a_tolerant_connection_delivers_a_message_with_a_hostile_header_table(name: str) -> None:
    # Given a tolerant connection's frame handler
    delivered: list[Any] = []
    conn = _connection(delivered)
    properties.tolerate(conn)
    # When a message with that table arrives, then a valid one
    _deliver(conn.on_inbound_frame, _with_headers(HOSTILE_TABLES[name][0]))
    _deliver(conn.on_inbound_frame, _frame(content_type="application/json"))
    # Then both are delivered, the first marked, the second as sent
    bad, good = delivered
    assert properties.MALFORMED in bad.properties["application_headers"]
    assert bad.body == b"body"
    assert good.properties == {"content_type": "application/json"}


def test_a_consumer_callback_that_raises_is_not_taken_for_a_bad_header() -> None:
    # A body-less message is handed to the consumer while its header is read: its error is its own.
    conn = SimpleNamespace(bytes_recv=0)

    def callback(*_: Any) -> None:
        raise LookupError("the consumer's own bug")

    conn.on_inbound_frame = frame_handler(conn, callback)
    properties.tolerate(conn)
    conn.on_inbound_frame((1, 1, struct.pack(">HH", 60, 60)))
    with pytest.raises(LookupError):
        conn.on_inbound_frame((2, 1, struct.pack(">HHQ", 60, 0, 0) + _frame(content_type="a")))


def test_a_table_py_amqp_reads_but_cannot_write_again_is_dropped_when_a_property_is_not_utf8() -> None:
    # py-amqp reads a table 600 deep (a stack frame a level) but writes it with two frames a level
    flags = 0x8000 | 0x2000
    header = struct.pack(">H", flags) + _shortstr(b"app/\xff") + _table(_entry(b"deep", b"F", _nested(600)))
    delivered: list[Any] = []
    conn = _connection(delivered)
    properties.tolerate(conn)
    _deliver(conn.on_inbound_frame, header)
    [bad] = delivered
    reason = bad.properties["application_headers"][properties.MALFORMED]
    assert "content_type" in reason and "cannot be encoded again" in reason
    assert list(bad.properties["application_headers"]) == [properties.MALFORMED]
