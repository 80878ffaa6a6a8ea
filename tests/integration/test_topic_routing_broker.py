"""`topic_matches` agrees with the real broker's topic exchange, empty words and empty keys included."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from kombu import Connection, Consumer, Exchange, Producer, Queue

from tchu_rpc.registry import topic_matches
from tchu_rpc.testing.plugin import HOW_TO_START

# Tiny alphabets make collisions between patterns and topics, and so matches, likely.
_PATTERNS = st.lists(st.sampled_from(["a", "b", "", "*", "#"]), max_size=5).map(".".join)
_TOPIC = st.one_of(
    st.just(""), st.lists(st.sampled_from(["a", "b", ""]), min_size=1, max_size=4).map(".".join)
)
_TOPICS = st.lists(_TOPIC, min_size=1, max_size=6, unique=True)


class Exchanger:
    """One connection and channel, an auto-delete topic exchange on it, and a way to route through it."""

    def __init__(self, connection: Connection) -> None:
        self.channel = connection.default_channel
        self.connection = connection
        self.exchange = Exchange(f"t{uuid.uuid4().hex[:10]}.topics", "topic", durable=False, auto_delete=True)
        self.exchange(self.channel).declare()
        self.producer = Producer(self.channel)

    def routed(self, pattern: str, topics: list[str]) -> list[str]:
        """Return the topics a queue bound with `pattern` receives when each is published once."""
        name = f"{self.exchange.name}.{uuid.uuid4().hex[:8]}"
        queue = Queue(
            name, self.exchange, routing_key=pattern, exclusive=True, auto_delete=True, durable=False
        )
        received: list[str] = []
        marker = uuid.uuid4().hex
        with Consumer(self.channel, [queue], callbacks=[_collect(received)], no_ack=True, accept=["json"]):
            for topic in topics:
                self.producer.publish(topic, exchange=self.exchange, routing_key=topic, serializer="json")
            # Publishes on one channel reach the queue in order: once the marker is in, all are.
            self.producer.publish(marker, exchange="", routing_key=name, serializer="json")
            while marker not in received:
                self.connection.drain_events(timeout=5)
        return [topic for topic in received if topic != marker]


def _collect(into: list[str]) -> Any:
    def on_message(body: str, message: Any) -> None:
        into.append(body)

    return on_message


@pytest.fixture(scope="module")
def exchanger(tchu_broker_url: str) -> Iterator[Exchanger]:
    connection = Connection(tchu_broker_url, connect_timeout=5)
    try:
        connection.connect()
    except Exception as exc:
        pytest.fail(f"{HOW_TO_START} ({exc})", pytrace=False)
    with connection:
        exchanger = Exchanger(connection)
        yield exchanger
        exchanger.exchange(exchanger.channel).delete()


@settings(max_examples=150, deadline=None)
@given(pattern=_PATTERNS, topics=_TOPICS)
@example(pattern="", topics=["", "a", "."])
@example(pattern="*", topics=["", "a", ".", "a.b"])
@example(pattern="#", topics=["", "a", ".", "a.b"])
@example(pattern="#.#", topics=["", "a", "."])
@example(pattern="a.#", topics=["a", "a.", "a.b", "b"])
@example(pattern="a.#.b", topics=["a.b", "a..b", "a.a.a.b", "b"])
@example(pattern="a.*.b", topics=["a..b", "a.b", "a.a.b"])
@example(pattern="*.b", topics=[".b", "b", "a.b"])
@example(pattern="a.*", topics=["a.", "a", "a.b"])
@example(pattern="#.", topics=["", ".", "a", "a."])
@example(pattern="*.#", topics=["", "a", "."])
def test_broker_routes_exactly_the_topics_topic_matches_accepts(
    exchanger: Exchanger, pattern: str, topics: list[str]
) -> None:
    expected = [topic for topic in topics if topic_matches(pattern, topic)]
    assert exchanger.routed(pattern, topics) == expected
