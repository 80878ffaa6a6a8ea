"""Malformed AMQP messages for the fuzz tests, and a pipelined confirming publisher for them.

Every message has a unique `message_id` (`fz00042`); all but the deliberately uncorrelated calls
carry it as `correlation_id` too, so that whatever the worker does with a message (dead-letter
copy, reply, log line) names it.
"""

from __future__ import annotations

import json
import random
import string
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import amqp
from kombu import Connection

CALL_TOPIC = "rpc.fuzz.echo"
EVENT_TOPIC = "fuzz.happened"
JSON = "application/json"
MSGPACK = "application/msgpack"
WRONG_TYPES = [
    "text/plain",
    "application/xml",
    "application/x-python-serialize",
    "application/json; charset=utf-8",
    "APPLICATION/JSON",
    "",
    None,
]
# Keys the worker reads, then filler. Never `compression` (kombu acts on it: see test_fuzz) nor
# `CC`/`BCC` (RabbitMQ routes copies by them).
KNOWN_HEADERS = [
    "x-tchu-deadline",
    "x-tchu-topic",
    "x-tchu-version",
    "x-tchu-deliveries",
    "x-tchu-error",
    "x-delivery-count",
    "x-death",
]
# No NaN or infinity: RabbitMQ 3.10 cannot parse them in a header table and closes the channel
# (541 INTERNAL_ERROR, a function_clause crash in rabbit_binary_parser:parse_table).
BAD_DEADLINES: list[Any] = [
    "soon",
    "1e12",
    b"\x00\xff",
    [1, 2],
    {"at": 1},
    None,
    True,
    False,
    -5,
    0,
    2**40,
    1.5,
    Decimal("1.5"),
    datetime(2000, 1, 1),
]


@dataclass(frozen=True)
class Fuzzed:
    """One message to publish, and which mutation made it."""

    id: str
    mutation: str
    exchange: str
    routing_key: str
    body: bytes
    properties: dict[str, Any]


class Fuzzer:
    """Make malformed calls and events for one service on one test's exchanges."""

    def __init__(
        self, seed: int, service: str, calls_exchange: str, events_exchange: str, *, reply_to: str, limit: int
    ) -> None:
        self.rng = random.Random(seed)
        self.service = service
        self.calls_exchange = calls_exchange
        self.events_exchange = events_exchange
        self.reply_to = reply_to
        self.limit = limit  # the worker's max_message_bytes: "huge" bodies exceed it

    def make(self, count: int) -> list[Fuzzed]:
        return [self.one(f"fz{i:05d}") for i in range(count)]

    def one(self, id: str) -> Fuzzed:
        call = self.rng.random() < 0.6
        mutations = CALL_MUTATIONS if call else EVENT_MUTATIONS
        mutation = self.rng.choice(mutations)
        props: dict[str, Any] = {"message_id": id, "correlation_id": id, "content_type": JSON}
        if call:
            props["reply_to"] = self.reply_to
            direct = self.rng.random() < 0.2
            exchange, key = ("", f"{self.service}.calls") if direct else (self.calls_exchange, CALL_TOPIC)
        else:
            direct = mutation == "unknown_topic"
            exchange, key = ("", f"{self.service}.events") if direct else (self.events_exchange, EVENT_TOPIC)
        body = getattr(self, f"_{mutation}")(id, props)
        return Fuzzed(id, f"{'call' if call else 'event'}:{mutation}", exchange, key, body, props)

    # -- mutations: each may change the properties and returns the body -------------------------
    def _valid(self, n: int = 0, fail: bool = False) -> bytes:
        return json.dumps({"n": n, "fail": fail}).encode()

    def _random_bytes(self, id: str, props: dict[str, Any]) -> bytes:
        props["content_type"] = self.rng.choice([JSON, MSGPACK])
        return self.rng.randbytes(self.rng.randint(0, 300))

    def _truncated_json(self, id: str, props: dict[str, Any]) -> bytes:
        whole = json.dumps({"n": 1, "fail": False, "pad": "x" * self.rng.randint(0, 200)}).encode()
        return whole[: self.rng.randint(0, len(whole) - 1)]

    def _wrong_content_type(self, id: str, props: dict[str, Any]) -> bytes:
        content_type = self.rng.choice([*WRONG_TYPES, "".join(self.rng.choices(string.printable, k=12))])
        if content_type is None:
            del props["content_type"]
        else:
            props["content_type"] = content_type
        return self._valid()

    def _huge(self, id: str, props: dict[str, Any]) -> bytes:
        pad = "y" * self.rng.randint(self.limit, 6 * self.limit)
        return json.dumps({"n": 1, "fail": False, "pad": pad}).encode()

    def _random_headers(self, id: str, props: dict[str, Any]) -> bytes:
        headers = {}
        for _ in range(self.rng.randint(1, 6)):
            key = self.rng.choice(KNOWN_HEADERS) if self.rng.random() < 0.5 else self._word("x-fuzz-")
            headers[key] = self._value(depth=0)
        props["application_headers"] = headers
        if props.get("reply_to") and self.rng.random() < 0.5:
            return self._valid()  # calls may be valid: whatever the headers do, a reply or a log says so
        return self.rng.randbytes(self.rng.randint(0, 64))

    def _bad_deadline(self, id: str, props: dict[str, Any]) -> bytes:
        deadline = self.rng.choice([*BAD_DEADLINES, time.time() - 60, time.time() + 600])
        props["application_headers"] = {"x-tchu-deadline": deadline}
        return self._valid()

    def _missing_reply_to(self, id: str, props: dict[str, Any]) -> bytes:
        if self.rng.random() < 0.5:
            del props["reply_to"]
        else:
            props["reply_to"] = ""
        return self._valid()

    def _missing_correlation_id(self, id: str, props: dict[str, Any]) -> bytes:
        del props["correlation_id"]
        return self._valid()

    def _handler_fails(self, id: str, props: dict[str, Any]) -> bytes:
        return self._valid(fail=True)

    def _unknown_topic(self, id: str, props: dict[str, Any]) -> bytes:
        return self._valid()

    def _unroutable_reply(self, id: str, props: dict[str, Any]) -> bytes:
        props["reply_to"] = f"nowhere.{uuid.uuid4().hex}"
        return self._valid()

    def _word(self, prefix: str) -> str:
        return prefix + "".join(
            self.rng.choices(string.ascii_lowercase + string.digits, k=self.rng.randint(1, 12))
        )

    def _value(self, depth: int) -> Any:
        rng = self.rng
        choices: list[Any] = [
            rng.randint(-(2**62), 2**62),
            rng.randint(-10, 10),
            rng.uniform(-1e12, 1e12),
            self._word(""),
            rng.randbytes(rng.randint(0, 16)),
            rng.random() < 0.5,
            None,
            Decimal("-12.345"),
            datetime(2020, 2, 2, 2, 2, 2),
        ]
        if depth < 2:
            choices.append([self._value(depth + 1) for _ in range(rng.randint(0, 3))])
            choices.append({self._word("k"): self._value(depth + 1) for _ in range(rng.randint(0, 3))})
        return rng.choice(choices)


CALL_MUTATIONS = [
    "random_bytes",
    "truncated_json",
    "wrong_content_type",
    "huge",
    "random_headers",
    "bad_deadline",
    "missing_reply_to",
    "missing_correlation_id",
    "handler_fails",
    "unroutable_reply",
]
EVENT_MUTATIONS = [
    "random_bytes",
    "truncated_json",
    "wrong_content_type",
    "huge",
    "random_headers",
    "handler_fails",
    "unknown_topic",
]


class ConfirmingPublisher:
    """Publish many messages on one channel with pipelined publisher confirms."""

    def __init__(self, conn: Connection) -> None:
        self.channel = conn.channel()
        self.channel.confirm_select()
        self._conn = conn
        self._seq = 0
        self._floor = 1  # every tag below this is confirmed
        self._unconfirmed: set[int] = set()
        self.nacked = 0
        self.returned: list[str] = []
        self.channel.events["basic_ack"].add(self._acked)
        self.channel.events["basic_nack"].add(self._nacked)
        self.channel.events["basic_return"].add(self._returned)

    def publish(self, message: Fuzzed) -> None:
        self.channel.basic_publish(
            amqp.Message(message.body, **message.properties),
            exchange=message.exchange,
            routing_key=message.routing_key,
            mandatory=True,
        )
        self._seq += 1
        self._unconfirmed.add(self._seq)
        if self._seq % 500 == 0:
            self.wait(lambda: len(self._unconfirmed) < 1000, 30)

    def wait_all(self, timeout: float) -> None:
        """Wait until the broker confirmed (or refused) every message published."""
        self.wait(lambda: not self._unconfirmed, timeout)

    def wait(self, condition: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{len(self._unconfirmed)} publishes still unconfirmed after {timeout} s"
                )
            try:
                self._conn.drain_events(timeout=0.2)
            except TimeoutError:
                pass

    def _acked(self, tag: int, multiple: bool) -> None:
        self._settle(tag, multiple)

    def _nacked(self, tag: int, multiple: bool) -> None:
        self.nacked += 1
        self._settle(tag, multiple)

    def _settle(self, tag: int, multiple: bool) -> None:
        if multiple:
            for t in range(self._floor, tag + 1):
                self._unconfirmed.discard(t)
            self._floor = max(self._floor, tag + 1)
        else:
            self._unconfirmed.discard(tag)

    def _returned(self, exc: Any, exchange: str, routing_key: str, message: Any) -> None:
        self.returned.append(str(message.properties.get("message_id")))
