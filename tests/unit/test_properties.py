"""Basic properties that are not UTF-8 are read, marked and made printable instead of failing."""

from __future__ import annotations

from typing import Any

import amqp
from amqp import serialization

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


def test_install_makes_py_amqp_use_the_tolerant_parser() -> None:
    properties.install()
    message = amqp.Message()
    message._load_properties(60, _frame(content_type=b"\xff"), 0)
    assert properties.MALFORMED in message.properties["application_headers"]


def test_printable_cuts_a_spelled_out_property_to_fit_a_short_string() -> None:
    buf = _frame(correlation_id=b"\xff" * 200)
    props, _ = properties.decode(buf, 0)

    spelled = properties.printable(props["correlation_id"])

    assert len(spelled.encode()) <= properties.MAX_SHORTSTR
    assert spelled.startswith("\\xff\\xff") and spelled.endswith("...")
