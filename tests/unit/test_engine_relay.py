"""The relay's bookkeeping when the broker closes its connection (`_worker.relay`), step by step.

The relay's I/O thread calls `_take` (a reply handed over), the publisher's confirm callbacks,
`_lost` (the connection closed) and `_connected` (a new one); here a test calls them in the order
that matters, with a publisher that records what it was asked to publish.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from amqp.exceptions import InternalError

from tchu_rpc import Settings
from tchu_rpc._worker.relay import Relay, _Reply

LIVE, GONE = "amq.rabbitmq.reply-to.live.k", "amq.rabbitmq.reply-to.gone.k"


class RecordingPublisher:
    """Records publishes; the test confirms them by calling their `on_confirm`."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []  # (correlation id, on_confirm)

    def publish(self, *, on_confirm: Any, **send: Any) -> None:
        self.sent.append((send["correlation_id"], on_confirm))

    def confirm(self, index: int = 0) -> str:
        correlation_id, on_confirm = self.sent.pop(index)
        on_confirm(True)
        return str(correlation_id)


class Harness:
    """A relay whose thread is the test: replies go in with `take`, outcomes are recorded."""

    def __init__(self) -> None:
        self.relay = Relay("svc", Settings(), on_return=lambda *args: None)
        self.done: list[tuple[str, bool]] = []
        self.connect()

    def connect(self) -> RecordingPublisher:
        publisher = RecordingPublisher()
        self.relay._publisher = publisher  # type: ignore[assignment]
        self.relay._next()  # what `_connected` does after it made the publisher
        return publisher

    @property
    def publisher(self) -> RecordingPublisher:
        return self.relay._publisher  # type: ignore[return-value]

    def take(self, correlation_id: str, address: str = LIVE) -> None:
        send = {"routing_key": address, "correlation_id": correlation_id, "body": b"", "exchange": ""}
        self.relay._take(_Reply(self.relay, send, lambda ok: self.done.append((correlation_id, ok))))

    def close(self, code: int = 541) -> None:
        self.relay._lost(InternalError("INTERNAL_ERROR", reply_code=code))


def test_replies_are_pipelined_and_settled_by_their_confirms() -> None:
    harness = Harness()
    for n in range(3):
        harness.take(f"c{n}")
    assert [c for c, _ in harness.publisher.sent] == ["c0", "c1", "c2"]  # none waits for another
    harness.publisher.confirm(1)
    assert harness.done == [("c1", True)]


def test_after_a_close_unconfirmed_replies_go_again_one_at_a_time_and_the_culprit_is_dropped() -> None:
    # Given three replies published, the second to a caller whose node is gone, and the first confirmed
    harness = Harness()
    for name, address in (("a", LIVE), ("b", GONE), ("c", LIVE)):
        harness.take(name, address)
    harness.publisher.confirm(0)

    # When the broker closes the connection (541) and a reply arrives meanwhile
    harness.close()
    harness.take("d")
    publisher = harness.connect()

    # Then, on the next connection, the unconfirmed replies go out again in order, one at a time
    assert [c for c, _ in publisher.sent] == ["b"]
    harness.close()  # the one in flight closes it again: its caller is gone
    assert ("b", True) in harness.done  # acked unanswered: nobody is left to answer
    publisher = harness.connect()
    assert [c for c, _ in publisher.sent] == ["c"]
    assert publisher.confirm() == "c"
    assert [c for c, _ in publisher.sent] == ["d"]
    assert publisher.confirm() == "d"
    assert harness.done == [("a", True), ("b", True), ("c", True), ("d", True)]

    # And once all are through, replies are pipelined again, and the gone address is not tried
    harness.take("e")
    harness.take("f", GONE)
    harness.take("g")
    assert [c for c, _ in publisher.sent] == ["e", "g"]
    assert harness.done[-1] == ("f", True)


def test_a_lone_reply_lost_with_a_connection_that_failed_otherwise_is_sent_again() -> None:
    # Given one reply in flight when the connection fails for another reason than its address
    harness = Harness()
    harness.take("a")
    harness.close(code=320)  # CONNECTION_FORCED: a node going down, say

    # Then it is not taken for gone: it goes out again on the next connection
    publisher = harness.connect()
    assert [c for c, _ in publisher.sent] == ["a"]
    assert publisher.confirm() == "a"
    assert harness.done == [("a", True)]


def test_an_address_is_taken_for_gone_for_a_minute_only(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given an address found gone
    harness = Harness()
    harness.take("a", GONE)
    harness.close()
    publisher = harness.connect()
    assert harness.done == [("a", True)] and not publisher.sent

    # When a reply to it comes within the minute, and another after it
    harness.take("b", GONE)
    later = time.monotonic() + 61
    monkeypatch.setattr(time, "monotonic", lambda: later)
    harness.take("c", GONE)

    # Then the first is dropped unsent, and the second is tried again (a 541 for another reason
    # must not cut a live caller off for good)
    assert harness.done[-1] == ("b", True)
    assert [c for c, _ in publisher.sent] == ["c"]


def test_one_at_a_time_ends_once_the_replies_unconfirmed_at_the_close_are_settled() -> None:
    # Given two replies unconfirmed when the connection failed
    harness = Harness()
    harness.take("a")
    harness.take("b")
    harness.close(code=320)
    publisher = harness.connect()
    assert [c for c, _ in publisher.sent] == ["a"]

    # When replies keep coming while those two go out again one at a time
    harness.take("x")
    assert publisher.confirm() == "a"
    assert [c for c, _ in publisher.sent] == ["b"]
    harness.take("y")
    assert publisher.confirm() == "b"

    # Then, once both are settled, what waited goes out at once, and new replies are pipelined
    assert [c for c, _ in publisher.sent] == ["x", "y"]
    harness.take("z")
    assert [c for c, _ in publisher.sent] == ["x", "y", "z"]
    assert [c for c, _ in harness.done] == ["a", "b"]
