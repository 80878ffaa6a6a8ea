"""Refused publishes wait 25 ms doubling to 250 ms (jittered) before going out again; errors say why."""

from __future__ import annotations

import random
import time
from concurrent import futures

import pytest

from tchu_rpc import CallTimeout, ConnectionLost, PublishFailed
from tchu_rpc._client.inflight import Pending
from tchu_rpc._client.refusals import Refusals, Refused, pause
from tchu_rpc._client.replies import expired


@pytest.mark.parametrize(
    ("count", "ceiling"), [(1, 0.025), (2, 0.05), (3, 0.1), (4, 0.2), (5, 0.25), (80, 0.25)]
)
def test_the_pause_doubles_from_25_ms_to_250_ms_with_jitter_below_each_step(
    count: int, ceiling: float
) -> None:
    rng = random.Random(19)
    pauses = [pause(count, rng) for _ in range(200)]
    assert all(ceiling / 2 <= p <= ceiling for p in pauses)
    assert len(set(pauses)) > 100  # jittered, so that many callers do not come back together


def test_a_refused_message_goes_out_again_when_due_in_order() -> None:
    refusals = Refusals(random.Random(1))
    now = 100.0
    assert refusals.refused("a", Refused(0, now), now, deadline=now + 5)
    assert refusals.refused("b", Refused(3, now), now, deadline=now + 5)  # 4th refusal: a longer pause
    assert refusals.again
    assert refusals.due(now) == ([], pytest.approx(now + 0.025, abs=0.0126))
    due, next_due = refusals.due(now + 0.03)
    assert due == ["a"] and next_due is not None and next_due > now + 0.03
    assert refusals.due(now + 1) == (["b"], None)
    assert not refusals.again


def test_a_refusal_too_close_to_the_deadline_is_left_to_the_deadline() -> None:
    refusals = Refusals(random.Random(1))
    refused = Refused(0, 10.0)
    assert not refusals.refused("a", refused, 10.0, deadline=10.01)
    assert refused.count == 1 and not refusals.again


def _pending(kind: str, *, sent: bool, refused: Refused | None = None) -> Pending:
    now = time.monotonic()
    pending = Pending(futures.Future(), kind, "a.topic", b"", now, True, timeout=2.0)
    pending.sent, pending.refused = sent, refused
    return pending


@pytest.mark.parametrize(("kind", "error"), [("call", CallTimeout), ("event", PublishFailed)])
def test_a_deadline_passed_before_sending_on_a_connected_client_is_an_error_of_time(
    kind: str, error: type[Exception]
) -> None:
    failed = expired(_pending(kind, sent=False), connected=True, last_error=OSError("an old loss"))
    assert type(failed) is error
    assert "deadline (2 s) passed before it could be sent" in str(failed)


@pytest.mark.parametrize("kind", ["call", "event"])
def test_a_message_the_broker_kept_refusing_fails_saying_how_often_and_how_long(kind: str) -> None:
    refused = Refused(7, time.monotonic() - 1.5)
    failed = expired(_pending(kind, sent=False, refused=refused), connected=True, last_error=None)
    assert type(failed) is PublishFailed
    assert "the broker refused it 7 times in 1.5" in str(failed)
    assert "may still have been enqueued" in str(failed)


def test_without_a_connection_the_error_is_connection_lost_and_mentions_refusals() -> None:
    refused = Refused(2, time.monotonic())
    failed = expired(
        _pending("call", sent=False, refused=refused), connected=False, last_error=OSError("down")
    )
    assert type(failed) is ConnectionLost
    assert "broker unreachable" in str(failed) and "refused it 2 times" in str(failed)


def test_a_call_sent_after_refusals_times_out_saying_it_was_refused_before() -> None:
    refused = Refused(1, time.monotonic())
    failed = expired(_pending("call", sent=True, refused=refused), connected=True, last_error=None)
    assert type(failed) is CallTimeout
    assert "no reply" in str(failed) and "refused it once" in str(failed)
