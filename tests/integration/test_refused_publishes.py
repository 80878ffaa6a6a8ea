"""What the broker refuses (basic.nack) is published again until its deadline; errors name their cause.

Issue 19 (12): during a quorum queue's leader election the broker refuses every publish, and the
client raised `PublishFailed` at once. A queue full with `x-overflow: reject-publish` refuses the
same way on one node. Issue 19 (13): a call or publish whose deadline passed before it was sent, on
a connected client, raised `ConnectionLost` ("broker unreachable").
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from kombu import Connection

from tchu_rpc import CallTimeout, Client, ConnectionLost, PublishFailed
from tchu_rpc.testing import TchuFactory, capture_logs

#: The timeout of a publish or call the broker keeps refusing: long enough for several refusals.
REFUSED_FOR = 0.6


@pytest.fixture
def client(tchu: TchuFactory) -> Client:
    """Return a connected client (its exchanges declared)."""
    client = tchu.client()
    client.publish("refused.warm", 0, timeout=10)
    return client


@pytest.fixture
def full_queue(tchu: TchuFactory, client: Client) -> Iterator[tuple[Connection, str]]:
    """Yield a connection and a queue of one message at most, bound to both exchanges, that refuses more."""
    queue = f"{tchu.service('refused')}.events"  # the factory deletes it after the test
    with Connection(tchu.broker_url, connect_timeout=5) as conn:
        channel = conn.channel()
        channel.queue_declare(
            queue,
            durable=True,
            auto_delete=False,
            arguments={"x-max-length": 1, "x-overflow": "reject-publish"},
        )
        channel.queue_bind(queue, tchu.settings.events_exchange, "refused.#")
        channel.queue_bind(queue, tchu.settings.calls_exchange, "rpc.refused.#")
        yield conn, queue


def _fill(client: Client) -> None:
    client.publish("refused.first", "first", timeout=5)  # the one message the queue takes


@pytest.mark.timeout(20)
@pytest.mark.parametrize("kind", ["event", "call"])
def test_a_message_the_broker_keeps_refusing_fails_at_its_deadline_saying_how_often(
    tchu: TchuFactory, client: Client, full_queue: tuple[Connection, str], kind: str
) -> None:
    # Given a queue that is full and refuses more (as a quorum queue without a leader refuses all)
    _fill(client)
    # When an event or a call routed to it is published with a short timeout
    started = time.monotonic()
    with pytest.raises(PublishFailed) as failed:
        if kind == "event":
            client.publish("refused.more", "more", timeout=REFUSED_FOR)
        else:
            client.call("rpc.refused.more", "more", timeout=REFUSED_FOR)
    took = time.monotonic() - started
    # Then it fails only at its deadline, saying the broker refused it several times
    assert took >= REFUSED_FOR, f"failed after {took:.3f} s: {failed.value}"
    assert took < REFUSED_FOR + 0.5, f"failed after {took:.3f} s: {failed.value}"
    assert "the broker refused it" in str(failed.value)
    times = int(str(failed.value).split("refused it ")[1].split(" times")[0])
    assert times >= 3, str(failed.value)


@pytest.mark.timeout(20)
def test_an_event_refused_for_a_while_is_published_again_with_its_id_and_confirmed(
    client: Client, full_queue: tuple[Connection, str]
) -> None:
    conn, queue = full_queue
    _fill(client)
    # Given an event the full queue refuses, published on another thread
    outcome: list[BaseException | None] = []
    publisher = threading.Thread(target=lambda: outcome.append(_outcome(client, "refused.later")))
    publisher.start()
    deadline = time.monotonic() + 5
    while not (refused := [(i, p) for i, p in client._inflight.items() if p.refused is not None]):
        assert time.monotonic() < deadline, "the event was never refused"
        time.sleep(0.01)  # the refusal comes on the client's I/O thread: nothing to wait on
    # When the queue makes room
    channel = conn.channel()
    assert channel.basic_get(queue, no_ack=True) is not None
    publisher.join(10)
    # Then the publish returns, confirmed, and the queue holds the event, published again under its id
    assert outcome == [None]
    later = channel.basic_get(queue, no_ack=True)
    assert later is not None and later.body == '"later"'
    [(message_id, pending)] = refused
    assert later.properties["message_id"] == message_id
    assert pending.refused is not None and pending.refused.count >= 1


def _outcome(client: Client, topic: str) -> BaseException | None:
    try:
        client.publish(topic, "later", timeout=10)
    except BaseException as exc:
        return exc
    return None


@pytest.mark.timeout(20)
@pytest.mark.parametrize("kind", ["event", "call"])
def test_a_deadline_that_passes_before_sending_on_a_connected_client_is_an_error_of_time(
    client: Client, kind: str
) -> None:
    # Given a connected client
    # When calls and publishes are given a deadline too short to send them
    errors = []
    for n in range(4):
        with pytest.raises((CallTimeout, PublishFailed, ConnectionLost)) as failed:
            if kind == "event":
                client.publish("refused.never", n, timeout=1e-6)
            else:
                client.call("rpc.refused.never", n, timeout=1e-6)
        errors.append(failed.value)
    # Then each is a CallTimeout or PublishFailed saying so, never ConnectionLost ("broker unreachable")
    expected = PublishFailed if kind == "event" else CallTimeout
    assert [type(e) for e in errors] == [expected] * 4, [repr(e) for e in errors]
    assert all("deadline" in str(e) for e in errors), [str(e) for e in errors]


#: Longer than the client's 3 s of refusals before it opens a new connection.
REFUSED_LONG = 4.0


@pytest.mark.timeout(30)
def test_a_connection_that_refuses_every_publish_for_3_s_is_opened_anew(
    client: Client, full_queue: tuple[Connection, str]
) -> None:
    # Given a client whose every publish the broker refuses (RabbitMQ 3.10 does that for good on a
    # channel that first published to a quorum queue while the queue elected a leader)
    _fill(client)
    # When it keeps refusing an event for longer than 3 s
    with capture_logs() as logs, pytest.raises(PublishFailed):
        client.publish("refused.more", "more", timeout=REFUSED_LONG)
    # Then the client opened a new connection once, and the event still failed only at its deadline
    events = [e["event"] for e in logs if e["event"] in ("publishes_refused", "connection_lost")]
    assert events == ["publishes_refused", "connection_lost"], events
    # And the client works on
    client.publish("elsewhere.fine", 1, timeout=5)


@pytest.mark.timeout(30)
def test_refusals_with_confirms_between_them_keep_the_connection(
    client: Client, full_queue: tuple[Connection, str]
) -> None:
    # Given a client whose events to one queue the broker refuses, while it confirms the others
    _fill(client)
    failed: list[BaseException] = []
    refused = threading.Thread(target=lambda: failed.append(_refused_for(client, REFUSED_LONG)))
    with capture_logs() as logs:
        refused.start()
        # When the refusals last longer than 3 s, with other publishes confirmed meanwhile
        while refused.is_alive():
            client.publish("elsewhere.fine", 1, timeout=5)
        refused.join()
    # Then the connection is kept, and the refused event fails at its deadline
    assert [type(e) for e in failed] == [PublishFailed]
    assert not [e for e in logs if e["event"] in ("publishes_refused", "connection_lost")]


def _refused_for(client: Client, timeout: float) -> BaseException:
    with pytest.raises(PublishFailed) as failed:
        client.publish("refused.more", "more", timeout=timeout)
    return failed.value
