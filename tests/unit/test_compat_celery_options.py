"""tchu-tchu's `celery_options` mapped onto `tchu_rpc.Retry` (Celery's autoretry semantics)."""

from __future__ import annotations

from typing import Any

import pytest

from tchu_rpc import Registry, Retry
from tchu_rpc.compat import TchuEvent, registering_on, subscribe
from tchu_rpc.compat.celery_options import retry_from
from tchu_rpc.errors import ArgumentTypeError, ConfigError
from tchu_rpc.testing import capture_logs


class Down(Exception):
    pass


def test_backoff_options_map_onto_an_exponential_retry() -> None:
    options = {
        "autoretry_for": (Down, ConnectionError),
        "max_retries": 5,
        "retry_backoff": 3,
        "retry_backoff_max": 60,
        "retry_jitter": False,
    }
    assert retry_from(options, "a") == Retry(
        attempts=6, on=(Down, ConnectionError), first_delay=3, backoff=2.0, max_delay=60, jitter=False
    )


def test_celerys_defaults_apply_to_what_is_not_given() -> None:
    backoff = retry_from({"autoretry_for": [Down], "retry_backoff": True}, "a")
    assert backoff == Retry(attempts=4, on=(Down,), first_delay=1.0, backoff=2.0, max_delay=600, jitter=True)
    fixed = retry_from({"autoretry_for": (Down,)}, "a")
    assert fixed == Retry(attempts=4, on=(Down,), first_delay=180, backoff=1.0, max_delay=180, jitter=False)


def test_retry_kwargs_and_default_retry_delay_give_a_fixed_delay() -> None:
    options = {"autoretry_for": (Down,), "retry_kwargs": {"max_retries": 1, "countdown": 5}}
    assert retry_from(options, "a") == Retry(
        attempts=2, on=(Down,), first_delay=5, backoff=1.0, max_delay=5, jitter=False
    )
    delayed = retry_from({"autoretry_for": (Down,), "default_retry_delay": 7, "max_retries": 0}, "a")
    assert delayed == Retry(attempts=1, on=(Down,), first_delay=7, backoff=1.0, max_delay=7, jitter=False)


def test_a_backoff_factor_above_its_maximum_waits_the_maximum() -> None:
    retry = retry_from({"autoretry_for": (Down,), "retry_backoff": 30, "retry_backoff_max": 10}, "a")
    assert retry is not None and [retry.delay(n) for n in (1, 2, 3)] == [10, 10, 10]


def test_without_autoretry_for_there_are_no_retries() -> None:
    assert retry_from({"max_retries": 5, "acks_late": True}, "a") is None
    assert retry_from(None, "a") is None


def test_options_without_an_equivalent_are_named_in_a_warning() -> None:
    with capture_logs() as logs:
        retry_from(
            {"autoretry_for": (Down,), "rate_limit": "10/m", "time_limit": 5, "acks_late": True}, "p.x"
        )
    warned = [e for e in logs if e["event"] == "celery_options_ignored"]
    assert len(warned) == 1
    assert (warned[0]["pattern"], warned[0]["options"]) == ("p.x", ["rate_limit", "time_limit"])


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"autoretry_for": (Down,), "max_retries": None}, ConfigError, "retry forever"),
        ({"autoretry_for": (Down,), "max_retries": 100}, ConfigError, "max_retries must be 0 to 99"),
        ({"autoretry_for": ("Down",)}, ArgumentTypeError, "Exception subclasses"),
        (["autoretry_for"], ConfigError, "must be a dict"),
    ],
)
def test_wrong_options_are_refused_at_registration(options: Any, error: type[Exception], match: str) -> None:
    with registering_on(Registry()), pytest.raises(error, match=match):
        subscribe("order.created", celery_options=options)(lambda data: None)


def test_subscribe_gives_the_retry_to_the_event_handler_only() -> None:
    options = {"autoretry_for": (Down,), "max_retries": 2}
    with registering_on(Registry()) as registry:
        subscribe("order.total", celery_options=options)(lambda data: data)
    retries = {h.kind: h.retry for h in registry.handlers}
    assert retries["call"] is None
    assert retries["event"] is not None and retries["event"].attempts == 3


def test_tchu_event_meta_celery_options_give_its_handler_retries() -> None:
    class Paid(TchuEvent):
        class Meta:
            topic = "payment.paid"
            celery_options = {"autoretry_for": (Down,), "max_retries": 1, "retry_backoff": True}  # noqa: RUF012

    with registering_on(Registry()) as registry:
        Paid(handler=lambda event: None).subscribe()
    (event,) = [h for h in registry.handlers if h.kind == "event"]
    assert event.retry is not None and (event.retry.attempts, event.retry.on) == (2, (Down,))
