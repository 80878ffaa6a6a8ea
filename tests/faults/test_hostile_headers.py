"""One hand-made message per header that broke the worker: each settled once, the connection kept.

Each test publishes its messages byte by byte (`wire_frames`) to a worker whose handlers match
every topic, behind a proxy that swaps in what RabbitMQ 3.10 refuses at publish (unknown field
types, a table longer than its frame, NaN: it closes the publisher's connection), as a broker that
let them through would deliver them. `WireService.settle` then checks that the worker is still on
its first connection, answers a call, and ran the handler or dead-lettered each arrival exactly
once, with no queue growing; and that a queue named in `CC` holds only the broker's own copy.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from wire_frames import decimal_field, field, nested
from wire_fuzz import EVENT_TOPIC, JSON, SAME_AS_ID, Built, Draft, build
from wire_service import WireService, header_string, ids

PROPERTIES = {"content_type": JSON, "correlation_id": SAME_AS_ID, "message_id": SAME_AS_ID}


BOTH_PATHS = pytest.mark.parametrize(
    "wire_service", [True, False], ids=["fast_path", "no_fast_path"], indirect=True
)


def _draft(route: str, label: str, *, body_ok: bool = True, properties: Any = (), **fields: Any) -> Draft:
    return Draft(route, body_ok, {**PROPERTIES, **dict(properties)}, labels=(label,), **fields)


def _publish(service: WireService, *drafts: Draft) -> list[Built]:
    built = [build(draft, f"wf{n:06d}", service.names) for n, draft in enumerate(drafts, 1)]
    service.publish(built)
    return built


def _reasons(letters: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """Return each dead letter's reason (`x-tchu-error`) by the id of the message it is a copy of."""
    reasons = {}
    for raw, body in letters:
        (id,) = ids([(raw, body)])
        reasons[id] = (header_string(raw, b"x-tchu-error") or b"").decode("utf-8", "replace")
    return reasons


def _assert_dead_lettered_naming(service: WireService, built: list[Built], keys: list[str]) -> None:
    """Each message: dead-lettered once (its handler never ran), the reason naming its header."""
    letters = service.settle(built)
    reasons = _reasons(letters)
    for message, key in zip(built, keys, strict=True):
        assert message.id in reasons, f"{message.describe()} was handled, not dead-lettered as malformed"
        assert key in reasons[message.id], (
            f"the reason does not name the header {key!r}: {reasons[message.id]!r}"
        )


# -- (a) CC and BCC: a dead letter routed again by the original's headers ----------------------------
@pytest.mark.timeout(60)
@pytest.mark.parametrize("header", ["cc", "bcc"])
def test_undecodable_event_naming_its_own_queue_in_cc_is_dead_lettered_once_without_a_loop(
    wire_service: WireService, header: str
) -> None:
    # Given an event that does not decode, whose CC (or BCC) names the service's own event queue
    events = field("S", wire_service.names.queue("events"))
    draft = _draft("events", f"{header.upper()}:events", body_ok=False, **{header: (events,)})
    # When it is published to the events exchange
    built = _publish(wire_service, draft)
    # Then exactly one dead letter, and the event and dead-letter queues stay still (no loop)
    assert len(wire_service.settle(built)) == 1


@pytest.mark.timeout(60)
def test_worker_copies_never_reach_another_queue_named_in_cc(wire_service: WireService) -> None:
    # Given an undecodable event straight into the event queue whose CC names another service's queue
    names = wire_service.names
    draft = _draft(
        "default:events",
        "CC:bystander",
        body_ok=False,
        entries=((b"x-tchu-topic", field("S", EVENT_TOPIC)),),
        cc=(field("S", names.bystander),),
        routed_to=frozenset({names.bystander}),
    )
    # When it is published
    built = _publish(wire_service, draft)
    # Then the other queue holds the broker's copy of the original only, not the worker's dead letter
    assert len(wire_service.settle(built)) == 1


# -- (b) to (e): header tables py-amqp cannot turn into Python ---------------------------------------
@pytest.mark.timeout(60)
@BOTH_PATHS
def test_timestamp_header_out_of_range_is_dead_lettered_naming_it(wire_service: WireService) -> None:
    # Given events whose headers hold a timestamp Python cannot hold: milliseconds written as
    # seconds (year 55840), one that looks negative (2**64 - 1), the first second of year 10000
    values = {"x-sent-ms": 1_700_000_000_000, "x-sent-negative": -1, "x-sent-10000": 253_402_300_800}
    drafts = [
        _draft("events", f"T:{key}", entries=((key.encode(), field("T", value)),))
        for key, value in values.items()
    ]
    # When they are published
    built = _publish(wire_service, *drafts)
    # Then each is dead-lettered once, the reason naming the header; connection kept, a call answered
    _assert_dead_lettered_naming(wire_service, built, list(values))


@pytest.mark.timeout(60)
@BOTH_PATHS
def test_unknown_field_type_byte_is_dead_lettered_naming_it(wire_service: WireService) -> None:
    # Given a call and an event whose headers hold a field of type 'Z' (no AMQP type)
    hostile = ((b"x-odd", b"Z\x00\x01"),)
    drafts = [_draft(route, "unknown-type-Z", hostile=hostile) for route in ("calls", "events")]
    # When they are published (the broker refuses 'Z': the proxy swaps it in on the way)
    built = _publish(wire_service, *drafts)
    # Then each is dead-lettered once naming the header, the connection kept
    _assert_dead_lettered_naming(wire_service, built, ["x-odd", "x-odd"])


@pytest.mark.timeout(60)
@BOTH_PATHS
def test_table_nested_2000_deep_is_dead_lettered_naming_it(wire_service: WireService) -> None:
    # Given an event whose header is a table nested 2,000 deep (past Python's recursion limit)
    draft = _draft("events", "F:2000-deep", entries=((b"x-deep", nested(2000, field("I", 1))),))
    # When it is published
    built = _publish(wire_service, draft)
    # Then it is dead-lettered once naming the header, the connection kept
    _assert_dead_lettered_naming(wire_service, built, ["x-deep"])


@pytest.mark.timeout(60)
@BOTH_PATHS
def test_table_nested_600_deep_read_but_not_writable_again_is_dead_lettered_once(
    wire_service: WireService,
) -> None:
    # Given events whose header is nested 600 deep: py-amqp reads it (a frame per level, under the
    # recursion limit of 1,000) but cannot write it again (two frames per level), as the worker
    # does in a dead letter (an undecodable body) or to make a non-UTF-8 property readable
    deep = ((b"x-deep", nested(600, field("I", 1))),)
    undecodable = _draft("events", "F:600-deep", body_ok=False, entries=deep)
    not_utf8 = _draft(
        "events",
        "F:600-deep, correlation_id:not-utf-8",
        entries=deep,
        properties={"correlation_id": b"\xff\xfe"},
    )
    # When they are published
    built = _publish(wire_service, undecodable, not_utf8)
    # Then each is dead-lettered once, the connection kept
    assert len(wire_service.settle(built)) == 2


@pytest.mark.timeout(60)
@BOTH_PATHS
def test_table_longer_than_its_frame_is_dead_lettered(wire_service: WireService) -> None:
    # Given an event whose header table claims 100,000 bytes more than its frame holds
    draft = _draft("events", "table-longer-than-frame", longer_table=True)
    # When it is published (the broker refuses it: the proxy makes it so on the way)
    built = _publish(wire_service, draft)
    # Then it is dead-lettered once, with a reason; the connection kept
    reasons = _reasons(wire_service.settle(built))
    assert reasons.get(built[0].id), f"not dead-lettered with a reason: {reasons}"


# -- (f) decimals, (g) what the broker refuses in a copy ---------------------------------------------
@pytest.mark.timeout(60)
def test_decimal_headers_are_handled_or_dead_lettered_once(wire_service: WireService) -> None:
    # Given events with decimal headers (a usual one, one of scale 255), decodable or not
    drafts = [
        _draft(
            "events", f"D:{value}", body_ok=body_ok, entries=((b"x-price", decimal_field(Decimal(value))),)
        )
        for value in ("123.45", "1E-255", "-2147483.648")
        for body_ok in (True, False)
    ]
    # When they are published
    built = _publish(wire_service, *drafts)
    # Then each is handled or dead-lettered once (the letters carry the decimal back to the broker)
    wire_service.settle(built)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("value", ["nan", "inf"])
def test_header_the_broker_refuses_is_not_copied_into_a_dead_letter(
    wire_service: WireService, value: str
) -> None:
    # Given an undecodable event whose header holds a double NaN or infinity, which RabbitMQ refuses
    # in any publish (541, the publisher's connection closed): a dead letter copying it would be too
    hostile = ((b"x-ratio", field("d", float(value))),)
    draft = _draft("events", f"d:{value}", body_ok=False, hostile=hostile)
    # When it is published (swapped in on the way)
    built = _publish(wire_service, draft)
    # Then it is dead-lettered once, and the worker keeps its connection
    assert len(wire_service.settle(built)) == 1
