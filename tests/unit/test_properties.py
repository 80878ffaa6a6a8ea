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
