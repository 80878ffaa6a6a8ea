"""Time limits: which call handlers ran too long, the start-up warning, and the typed remote error."""

from __future__ import annotations

import pickle
import weakref

import pytest

from tchu_rpc import HandlerTimeLimit, RemoteError, Settings, wire
from tchu_rpc._worker.time_limits import TimeLimits, check_consumer_timeout
from tchu_rpc.errors import remote_error
from tchu_rpc.testing import capture_logs


def test_only_jobs_past_their_deadline_and_not_finished_expire() -> None:
    limits = TimeLimits(10.0)
    slow, done, later = object(), object(), object()
    limits.start(slow, 0.0)
    limits.start(done, 1.0)
    limits.start(later, 5.0)
    limits.finish(done)

    expired, next_due = limits.expired(12.0)

    assert expired == [slow]
    assert next_due == 15.0
    assert limits.expired(12.0) == ([], 15.0)  # an expired job is reported once


def test_without_a_limit_nothing_is_tracked() -> None:
    limits = TimeLimits(None)
    limits.start(object(), 0.0)
    assert limits.expired(1e9) == ([], None)


def test_clear_forgets_every_job() -> None:
    limits = TimeLimits(1.0)
    limits.start(object(), 0.0)
    limits.clear()
    assert limits.expired(5.0) == ([], None)


@pytest.mark.parametrize(
    ("limit", "broker", "warns"),
    [
        (1500.0, 1800.0, False),
        (1800.0, 1800.0, True),
        (None, 1800.0, True),
        (None, None, False),
        (60, 30, True),
    ],
)
def test_consumer_timeout_warning(limit: float | None, broker: float | None, warns: bool) -> None:
    settings = Settings(handler_time_limit=limit, broker_consumer_timeout=broker)
    with capture_logs() as logs:
        assert check_consumer_timeout(settings, "svc") is warns
    assert [e["event"] for e in logs] == (["consumer_timeout_exceeded"] if warns else [])


def test_a_handler_time_limit_failure_becomes_its_own_remote_error() -> None:
    exc = remote_error("HandlerTimeLimit", "ran too long")
    assert type(exc) is HandlerTimeLimit
    assert isinstance(exc, RemoteError)
    assert (exc.type, exc.message) == ("HandlerTimeLimit", "ran too long")
    assert type(pickle.loads(pickle.dumps(exc))) is HandlerTimeLimit


def test_other_failures_stay_remote_errors() -> None:
    assert type(remote_error("ValueError", "bad")) is RemoteError


@pytest.mark.parametrize(
    "codec", [wire.codec_for("json"), wire.codec_for("msgpack")], ids=["json", "msgpack"]
)
def test_progress_is_an_envelope_apart_from_replies(codec: wire.Codec) -> None:
    body = wire.encode(codec, wire.Progress({"step": 3}), 1 << 20)
    assert wire.decode_envelope(codec, body) == wire.Progress({"step": 3})
    assert wire.decode_envelope(codec, wire.encode(codec, wire.Progress(), 1 << 20)) == wire.Progress()
    assert wire.decode_envelope(codec, codec.encode(wire.Result(1))) == wire.Result(1)


class _Message:
    """A delivery's stand-in, weakly referenceable."""


class _Job:
    def __init__(self) -> None:
        self.message = _Message()


def test_finished_jobs_are_forgotten_while_one_handler_runs_long() -> None:
    # Given one handler that never finishes, started first (its deadline heads the queue)
    limits = TimeLimits(10.0)
    stuck = _Job()
    limits.start(stuck, 0.0)

    # When 100,000 other calls start and finish meanwhile
    messages = []
    for n in range(100_000):
        job = _Job()
        messages.append(weakref.ref(job.message))
        limits.start(job, n * 1e-5)
        limits.finish(job)
    del job

    # Then no finished call (nor its message) is kept: memory is bounded by what is running
    assert sum(ref() is not None for ref in messages) == 0
    assert limits.expired(9.0) == ([], 10.0)
    assert limits.expired(10.0) == ([stuck], None)
