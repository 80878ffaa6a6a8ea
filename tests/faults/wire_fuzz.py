"""Hypothesis strategies for messages as any publisher can put them on the wire, and where they go.

A `Draft` is one message before it has an id: its route (an exchange, or the default exchange
straight into a queue), every basic property, a header table of every AMQP field type with in- and
out-of-range values, `CC`/`BCC` naming the service's own queues and another one, and a body that
decodes or not. `build` gives it an id (`wf000042`, in its body so that handler runs and dead
letters name it) and its frames (`wire_frames`). Field values RabbitMQ 3.10 refuses at publish
(the `U` type, unknown type bytes, NaN and infinities, a `CC` string, tables longer than their
frame: it closes the publishing connection, 541, or channel, 406) are published as placeholders
and swapped in on the way to the worker by the test's proxy (`FaultProxy.rewrite_headers`), as a
broker that let them through would deliver them.
"""

from __future__ import annotations

import functools
import json
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st
from wire_frames import content_header, nested, swapped, table
from wire_frames import field as wire_field

CALL_TOPIC = "rpc.wire.echo"
EVENT_TOPIC = "wire.happened"
JSON = "application/json"
ID = re.compile(rb"wf\d{6}")
WORKER_LETTER = b"\x0cx-tchu-error"  # the key of the reason header, in a dead letter's raw table
#: Set to the message's id by `build`.
SAME_AS_ID = "<id>"
_INTS = {
    "b": (-(2**7), 2**7 - 1),
    "B": (0, 2**8 - 1),
    "s": (-(2**15), 2**15 - 1),
    "u": (0, 2**16 - 1),
    "I": (-(2**31), 2**31 - 1),
    "i": (0, 2**32 - 1),
    "l": (-(2**63), 2**63 - 1),
    "L": (-(2**63), 2**63 - 1),
}
_KNOWN_TYPES = b"SsxbBUuIiLlfdDFAtTV"
YEAR_10000 = 253_402_300_800  # the first second Python's datetime cannot hold


@dataclass(frozen=True)
class Names:
    """The queues and exchanges of the service under test, and who publishes."""

    service: str
    calls_exchange: str
    events_exchange: str
    reply_queue: str
    bystander: str  # another service's queue
    retry_queue: str
    login: str

    def queue(self, lane: str) -> str:
        return f"{self.service}.{lane}"

    @property
    def queues(self) -> tuple[str, ...]:
        lanes = tuple(self.queue(lane) for lane in ("calls", "events", "dead"))
        return (*lanes, self.retry_queue, self.bystander)


@dataclass(frozen=True, repr=False)
class Draft:
    """One message to publish, without its id; `labels` say what was fuzzed."""

    route: str  # "calls", "events" (their exchanges), "default:calls", "default:events"
    body_ok: bool
    properties: dict[str, Any]
    entries: tuple[tuple[bytes, bytes], ...] = ()
    hostile: tuple[tuple[bytes, bytes], ...] = ()  # (key, field) swapped in on the way to the worker
    cc: tuple[bytes, ...] = ()  # encoded array items
    bcc: tuple[bytes, ...] = ()
    routed_to: frozenset[str] = frozenset()  # the queues named in CC/BCC (strings)
    longer_table: bool = False  # the table declares 100,000 bytes more than it holds (swapped)
    labels: tuple[str, ...] = field(default=())

    def __repr__(self) -> str:  # what hypothesis prints of a failing batch
        return f"Draft({self.route}: {', '.join(self.labels)})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # hypothesis' printer, for dataclasses
        printer.text(repr(self))


@dataclass(frozen=True)
class Built:
    """A draft with its id: what to publish, what to swap in transit, where the broker puts it."""

    id: str
    draft: Draft
    exchange: str
    routing_key: str
    header: bytes
    body: bytes
    swaps: dict[bytes, bytes]
    destinations: frozenset[str]

    def arrivals(self, names: Names) -> int:
        """How often the worker receives it: per lane queue, and again from the retry delay queue."""
        return sum(
            q in self.destinations for q in (names.queue("calls"), names.queue("events"), names.retry_queue)
        )

    def describe(self) -> str:
        return f"{self.id} via {self.draft.route} [{', '.join(self.draft.labels)}]"


def build(draft: Draft, id: str, names: Names) -> Built:
    """Give `draft` its id; return its content header, body and in-transit swaps."""
    properties = {k: (id if v == SAME_AS_ID else v) for k, v in draft.properties.items()}
    entries, swaps = list(draft.entries), {}
    for n, (key, hostile) in enumerate(draft.hostile):
        entry, placeholder, real = swapped(f"x-swap-{id}-{n}", key, hostile)
        entries.insert(0, entry)
        swaps[placeholder] = real
    if draft.cc:
        entries.append((b"CC", b"A" + struct.pack(">I", len(b"".join(draft.cc))) + b"".join(draft.cc)))
    if draft.bcc:
        entries.append((b"BCC", b"A" + struct.pack(">I", len(b"".join(draft.bcc))) + b"".join(draft.bcc)))
    headers = table(entries)
    if draft.longer_table:
        entry, placeholder, real = swapped(f"x-long-{id}", "k", wire_field("V", None))
        headers = table([entry, *entries])
        (size,) = struct.unpack_from(">I", headers)
        swaps[headers[: 4 + len(placeholder)]] = struct.pack(">I", size + 100_000) + real
    payload = {"n": int(id[2:]), "id": id}
    body = json.dumps(payload).encode() if draft.body_ok else b"\xff\x00not json " + id.encode()
    lane = draft.route.rsplit(":", 1)[-1]
    if draft.route.startswith("default:"):
        exchange, key = "", names.queue(lane)
        destinations = frozenset({key} | draft.routed_to)
    else:
        exchange = names.calls_exchange if lane == "calls" else names.events_exchange
        key = CALL_TOPIC if lane == "calls" else EVENT_TOPIC
        destinations = frozenset({names.queue(lane)})  # bound with `#`: CC keys reach only this queue
    header = content_header(len(body), properties, headers)
    return Built(id, draft, exchange, key, header, body, swaps, destinations)


# -- strategies -----------------------------------------------------------------------------------
# Built once: hypothesis validates every strategy object it draws from the first time, which
# costs more than the draw itself when a strategy is made anew per draw (50 messages per batch).
_ints = functools.lru_cache(maxsize=None)(st.integers)
_binary = functools.lru_cache(maxsize=None)(st.binary)
_text = functools.lru_cache(maxsize=None)(st.text)
_FLOAT32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
_FLOAT64 = st.floats(allow_nan=False, allow_infinity=False)
_SCALAR_KINDS = st.sampled_from("SxbBsuIilLfdDtTV")
_FLOAT_KINDS = st.sampled_from("fd")
_NON_FINITE = st.sampled_from([float("nan"), float("inf"), float("-inf")])
_BOOLS = st.booleans()
_UNKNOWN_TYPES = st.sampled_from([b for b in range(256) if b not in _KNOWN_TYPES])


def _often(draw: Any, percent: int) -> bool:
    return bool(draw(_ints(0, 99)) >= 100 - percent)  # the simplest draw (0) says no


@st.composite
def short_strings(draw: Any) -> bytes | str:
    """Short strings: text, bytes that are not UTF-8, up to the 255 bytes a short string holds."""
    choice = draw(_ints(0, 3))
    if choice == 0:
        return str(draw(_text(max_size=12)))
    if choice == 1:
        return bytes(draw(_binary(max_size=12)))
    fill = b"\xff" if choice == 2 else b"a"
    return fill * draw(_ints(200, 255))


@st.composite
def keys(draw: Any) -> bytes:
    """Table keys: words, bytes that are not UTF-8, up to 255 bytes.

    Never a name the worker or kombu reads (`x-tchu-*`, `x-death`, `compression`: test_fuzz.py fuzzes
    those) nor `CC`/`BCC`, which drafts set on purpose.
    """
    choice = draw(_ints(0, 2))
    if choice == 0:
        key = b"x-fuzz-" + draw(_text("abcdefghij-", min_size=1, max_size=8)).encode()
    elif choice == 1:
        key = b"\xfe" + bytes(draw(_binary(max_size=8)))
    else:
        key = b"k" * draw(_ints(100, 255))
    return key


@st.composite
def scalars(draw: Any) -> tuple[str, bytes]:
    """(label, field) of each scalar type RabbitMQ takes, across its range."""
    kind = draw(_SCALAR_KINDS)
    if kind in _INTS:
        return kind, wire_field(kind, draw(_ints(*_INTS[kind])))
    if kind == "S":
        long = _often(draw, 10)
        value = b"\xff" * draw(_ints(1000, 5000)) if long else draw(SHORT_STRINGS)
        return "S:long" if long else "S", wire_field("S", value)
    if kind == "x":
        return kind, wire_field("x", bytes(draw(_binary(max_size=20))))
    if kind == "f":
        return kind, wire_field("f", draw(_FLOAT32))
    if kind == "d":
        return kind, wire_field("d", draw(_FLOAT64))
    if kind == "D":
        scale = draw(_ints(0, 255))
        label = "D:large-scale" if scale > 28 else "D"
        return label, wire_field("D", (scale, draw(_ints(-(2**31), 2**31 - 1))))
    if kind == "T":
        return "T", wire_field("T", draw(_ints(0, YEAR_10000 - 1)))
    return kind, wire_field(kind, draw(_BOOLS) if kind == "t" else None)


@st.composite
def values(draw: Any, depth: int = 0) -> tuple[str, bytes]:
    """(label, field): a scalar, or a table or array of them (a few levels)."""
    choice = draw(_ints(0, 9)) if depth < 2 else 0
    if choice == 8:
        items = draw(_VALUE_LISTS[depth + 1])
        return "A", wire_field("A", [v for _, v in items])
    if choice == 9:
        items = draw(_ENTRY_LISTS[depth + 1])
        return "F", wire_field("F", [(k, v) for k, (_, v) in items])
    return draw(SCALARS)


@st.composite
def out_of_range(draw: Any) -> tuple[str, bytes]:
    """(label, field) the broker takes and py-amqp cannot turn into Python, or back into a table.

    Tables nested deeper than the recursion limit cannot be read; between half of it and all of it
    they can be read (one frame per level) but not written again (two frames per level): a copy of
    the message fails. Hypothesis raises the limit while it runs a test (to about 3,000).
    """
    choice = draw(_ints(0, 5))
    if choice == 0:
        return "T:ms-as-seconds", wire_field("T", 1_700_000_000_000)
    if choice == 1:
        return "T:past-9999", wire_field("T", draw(_ints(YEAR_10000, 2**63 - 1)))
    if choice == 2:
        return "T:negative", wire_field("T", -draw(_ints(1, 2**40)))
    depth = (600, 2000, 5000)[choice - 3]
    return f"F:{depth}-deep", nested(depth, wire_field("I", 1))


@st.composite
def refused_at_publish(draw: Any) -> tuple[str, bytes]:
    """(label, field) RabbitMQ 3.10 refuses at publish; the proxy swaps them in (see the module)."""
    choice = draw(_ints(0, 4))
    if choice == 0:
        return "U", wire_field("U", draw(_ints(*_INTS["s"])))
    if choice == 1:
        type_byte = draw(_UNKNOWN_TYPES)
        return f"unknown-type-{type_byte:#04x}", bytes((type_byte,)) + bytes(draw(_binary(max_size=8)))
    if choice == 2:
        kind = draw(_FLOAT_KINDS)
        value = draw(_NON_FINITE)
        return f"{kind}:{value}", wire_field(kind, value)
    if choice == 3:
        return "F:longer-than-frame", b"F" + struct.pack(">I", 100_000) + b"\x01k"
    return "S:longer-than-frame", b"S" + struct.pack(">I", 100_000) + b"abc"


SHORT_STRINGS = short_strings()
_NONE_OR_SHORT = st.one_of(st.none(), SHORT_STRINGS)
KEYS = keys()
SCALARS = scalars()
OUT_OF_RANGE = out_of_range()
REFUSED_AT_PUBLISH = refused_at_publish()
_VALUES = [values(depth) for depth in range(3)]
_VALUE_LISTS = [st.lists(v, max_size=3) for v in _VALUES]
_ENTRY_LISTS = [st.lists(st.tuples(KEYS, v), max_size=3) for v in _VALUES]
_TOP_ENTRIES = st.lists(st.tuples(KEYS, _VALUES[0]), max_size=5)


class Dice:
    """Many yes-or-no and pick-one choices from one draw: hypothesis pays per draw, not per byte.

    A zero byte (the simplest draw) says no and picks the first.
    """

    def __init__(self, data: bytes) -> None:
        self._bytes = iter(data)

    def often(self, percent: int) -> bool:
        return next(self._bytes, 0) * 100 >= (100 - percent) * 256

    def pick(self, choices: Sequence[Any]) -> Any:
        return choices[next(self._bytes, 0) % len(choices)]


_DICE = st.binary(min_size=40, max_size=40)
_LONG_STRINGS = (
    "content_type",
    "correlation_id",
    "content_encoding",
    "message_id",
    "type",
    "app_id",
    "cluster_id",
)


def _properties(draw: Any, dice: Dice, names: Names, call: bool) -> tuple[dict[str, Any], list[str]]:
    """Every basic property, each left out or set to a value the broker takes; with their labels.

    Not here, as the broker refuses them at publish: an `expiration` that is not a non-negative
    integer (406), a `delivery_mode` other than 1 or 2 (406), a `user_id` other than the login
    (406), a `reply_to` of direct reply-to from a channel not consuming it (406). Expirations are
    long: a message must not expire before the worker took it.
    """
    props: dict[str, Any] = {"content_type": JSON, "correlation_id": SAME_AS_ID}
    labels = []
    if call or dice.often(20):
        props["reply_to"] = names.reply_queue
    if dice.often(15):
        hostile = [names.bystander, names.queue("calls"), "other.calls", "", "amq.gen-x", None]
        props["reply_to"] = dice.pick(hostile) if dice.often(50) else draw(SHORT_STRINGS)
        labels.append("reply_to:hostile")
    for name in _LONG_STRINGS:
        if dice.often(12):
            props[name] = draw(_NONE_OR_SHORT)
            labels.append(f"{name}:fuzzed")
    if dice.often(30):
        props["delivery_mode"] = dice.pick([1, 2])
        props["priority"] = dice.pick(range(256))
        props["expiration"] = str(draw(_ints(600_000, 10**9)))
        props["timestamp"] = draw(_ints(0, 2**64 - 1))
        labels.append("delivery_mode,priority,expiration,timestamp")
    if dice.often(10):
        props["user_id"] = names.login
        labels.append("user_id")
    return props, labels


def _cc(dice: Dice, names: Names) -> tuple[tuple[bytes, ...], frozenset[str], str]:
    pool = [*names.queues, CALL_TOPIC, "no.such.queue"]
    picked = [dice.pick(pool) for _ in range(dice.pick([1, 2, 3]))]
    items = tuple(wire_field("S", name) for name in picked)
    if dice.often(10):
        items += (wire_field("I", 5),)  # RabbitMQ skips what is not a string
    routed = frozenset(picked) & frozenset(names.queues)
    short = dict(
        zip(pool, ("calls", "events", "dead", "retry", "bystander", "topic", "no-queue"), strict=True)
    )
    return items, routed, "+".join(short[name] for name in picked)


#: Families of hostile values `drafts` can leave out (`without`), to tell which one breaks a worker.
FAMILIES = ("out-of-range", "refused-at-publish", "cc", "cc-string", "longer-table")


@st.composite
def drafts(draw: Any, names: Names, without: frozenset[str] = frozenset()) -> Draft:
    """One message as a publisher may write it (see the module), without the `FAMILIES` named."""
    dice = Dice(draw(_DICE))
    route = dice.pick(["calls", "events", "default:calls", "default:events"])
    props, labels = _properties(draw, dice, names, route.endswith("calls"))
    entries: list[tuple[bytes, bytes]] = []
    for key, (label, value) in draw(_TOP_ENTRIES):
        entries.append((key, value))
        labels.append(label)
    if dice.often(5):
        entries += [(b"w%d" % n, wire_field("I", n)) for n in range(500 + 10 * dice.pick(range(256)))]
        labels.append("wide")
    if route.startswith("default:") and dice.often(80):
        topic = CALL_TOPIC if route.endswith("calls") else EVENT_TOPIC
        entries.append((b"x-tchu-topic", wire_field("S", topic)))
    if dice.often(12) and "out-of-range" not in without:
        label, value = draw(OUT_OF_RANGE)
        entries.append((draw(KEYS), value))
        labels.append(label)
    hostile = []
    if dice.often(12) and "refused-at-publish" not in without:
        label, value = draw(REFUSED_AT_PUBLISH)
        hostile.append((draw(KEYS), value))
        labels.append(label)
    if dice.often(4) and "cc-string" not in without:
        lane = dice.pick(["calls", "events", "dead"])
        hostile.append((b"CC", wire_field("S", names.queue(lane))))
        labels.append(f"CC:string:{lane}")
    cc: tuple[bytes, ...] = ()
    bcc: tuple[bytes, ...] = ()
    routed: frozenset[str] = frozenset()
    if dice.often(25) and "cc" not in without:
        cc, routed, label = _cc(dice, names)
        labels.append(f"CC:{label}")
    if dice.often(10) and "cc" not in without:
        bcc, more, label = _cc(dice, names)
        routed |= more
        labels.append(f"BCC:{label}")
    longer = dice.often(3) and "longer-table" not in without
    if longer:
        labels.append("table-longer-than-frame")
    body_ok = dice.often(80)
    labels.append("body:ok" if body_ok else "body:undecodable")
    return Draft(
        route, body_ok, props, tuple(entries), tuple(hostile), cc, bcc, routed, longer, tuple(labels)
    )
