"""Retry policies: their delays and validation, and how the worker plans, names and reads retries."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from tchu_rpc import topology, wire
from tchu_rpc._worker import retries
from tchu_rpc._worker.dispatch import Dispatcher, EventOutcome
from tchu_rpc._worker.messages import trusted_copy
from tchu_rpc.config import Settings
from tchu_rpc.errors import ArgumentTypeError, ConfigError, RegistryError
from tchu_rpc.registry import Registry
from tchu_rpc.retry import Retry


def never(data: Any) -> None:
    return None


class Flaky:
    """A handler object that raises `error` on every run and counts its runs."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.runs = 0

    def __call__(self, data: Any) -> None:
        self.runs += 1
        if self.error is not None:
            raise self.error


# -- the policy ---------------------------------------------------------------------------------
def test_delays_grow_by_the_backoff_up_to_the_maximum() -> None:
    policy = Retry(attempts=6, first_delay=1.0, backoff=2.0, max_delay=5.0)
    assert [policy.delay(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_sub_second_delays_are_kept() -> None:
    assert [Retry(first_delay=0.2, backoff=1.5).delay(n) for n in (1, 2)] == pytest.approx([0.2, 0.3])


def test_a_huge_backoff_is_capped_without_overflowing() -> None:
    assert Retry(attempts=100, backoff=100.0, max_delay=60).delay(99) == 60


def test_jitter_draws_between_half_the_delay_and_the_delay() -> None:
    policy = Retry(first_delay=1.0, backoff=2.0)
    assert policy.draw(2, rng=lambda: 0.0) == 1.0
    assert policy.draw(2, rng=lambda: 0.999999) == pytest.approx(2.0, abs=1e-5)
    assert all(1.0 <= policy.draw(2) <= 2.0 for _ in range(200))


def test_without_jitter_the_wait_is_the_delay() -> None:
    assert Retry(first_delay=0.5, jitter=False).draw(3, rng=lambda: 0.0) == 2.0


def test_defaults_run_three_times_on_any_exception() -> None:
    policy = Retry()
    assert (policy.attempts, policy.backoff, policy.max_delay, policy.first_delay) == (3, 2.0, 300.0, 1.0)
    assert policy.retries(KeyError("x")) and policy.jitter


def test_on_takes_one_class_or_several_and_matches_subclasses() -> None:
    assert Retry(on=ConnectionError).on == (ConnectionError,)  # type: ignore[arg-type]
    listed = Retry(on=[ConnectionError, TimeoutError])  # type: ignore[arg-type]
    assert listed.on == (ConnectionError, TimeoutError)
    assert hash(listed)
    assert listed.retries(ConnectionRefusedError()) and not listed.retries(ValueError())


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"attempts": 0}, "attempts"),
        ({"attempts": 101}, "attempts"),
        ({"backoff": 0.5}, "backoff"),
        ({"backoff": float("nan")}, "backoff"),
        ({"first_delay": 0}, "first_delay"),
        ({"first_delay": -1.0}, "first_delay"),
        ({"max_delay": 0.5}, "max_delay"),  # below first_delay
        ({"max_delay": 86_401}, "max_delay"),
        ({"max_delay": float("inf")}, "max_delay"),
    ],
)
def test_a_value_out_of_range_is_a_config_error_naming_its_field(
    arguments: dict[str, Any], field: str
) -> None:
    with pytest.raises(ConfigError, match=f"Retry {field} "):
        Retry(**arguments)


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"attempts": 2.0}, "attempts"),
        ({"attempts": True}, "attempts"),
        ({"backoff": "2"}, "backoff"),
        ({"jitter": 1}, "jitter"),
        ({"on": ()}, "on"),
        ({"on": ValueError()}, "on"),
        ({"on": (KeyboardInterrupt,)}, "on"),
        ({"on": (int,)}, "on"),
    ],
)
def test_a_value_of_the_wrong_type_is_an_argument_type_error(arguments: dict[str, Any], field: str) -> None:
    with pytest.raises(ArgumentTypeError, match=f"Retry {field} "):
        Retry(**arguments)


# -- registration -------------------------------------------------------------------------------
def test_an_event_handler_keeps_its_retry_policy() -> None:
    registry, policy = Registry(), Retry(attempts=5)
    registry.subscribe("order.created", retry=policy)(never)
    assert registry.handlers[0].retry is policy
    assert registry.add("order.paid", Flaky()).retry is None


def test_a_call_handler_cannot_have_a_retry_policy() -> None:
    with pytest.raises(RegistryError, match="not retried by the worker"):
        Registry().add("rpc.orders.get", never, retry=Retry())
    with pytest.raises(RegistryError, match="not retried by the worker"):
        Registry().add("order.get", never, kind="call", retry=Retry())


def test_a_retry_that_is_not_a_retry_is_refused() -> None:
    with pytest.raises(RegistryError, match=r"must be a tchu_rpc\.Retry"):
        Registry().add("order.created", never, retry={"attempts": 3})  # type: ignore[arg-type]


# -- planning -----------------------------------------------------------------------------------
def test_delay_queues_are_one_per_delay_the_policies_can_ask_for() -> None:
    registry = Registry()
    registry.add("order.created", never, retry=Retry(attempts=5, first_delay=0.2, max_delay=1.0))
    registry.add("order.paid", Flaky(), retry=Retry(attempts=2, first_delay=0.4))
    registry.add("order.shipped", Flaky())
    registry.add("rpc.orders.get", never)
    assert retries.delays(registry.handlers) == [200, 400, 800, 1000]
    assert retries.delays(Registry().handlers) == []


def test_retry_queue_names_say_their_delay() -> None:
    assert topology.retry_queue_name("orders", 200) == "orders.retry.200ms"
    assert topology.retry_queue_name("orders", 4000) == "orders.retry.4s"
    assert topology.retry_queue_name("orders", 1500) == "orders.retry.1500ms"


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_a_delay_queue_dead_letters_into_the_event_queue_when_its_time_is_up(queue_type: Any) -> None:
    queue = topology.retry_queue("orders", Settings(queue_type=queue_type), 4000)
    arguments = queue.queue_arguments or {}
    assert (queue.name, queue.durable, queue.auto_delete) == ("orders.retry.4s", True, False)
    assert arguments["x-message-ttl"] == 4000
    assert arguments["x-dead-letter-exchange"] == ""
    assert arguments["x-dead-letter-routing-key"] == "orders.events"
    assert (arguments.get("x-dead-letter-strategy") == "at-least-once") == (queue_type == "quorum")


def test_a_failure_with_runs_left_is_rescheduled_in_the_queue_of_its_longest_delay() -> None:
    handler = Registry().add("order.created", never, retry=Retry(attempts=3, first_delay=0.2))
    first = retries.reschedule(handler, "k", OSError(), "OSError: a", retries.FIRST, rng=lambda: 0.0)
    assert first is not None
    assert (first.attempt, first.wait, first.queue_ms, first.errors) == (2, 0.1, 200, ("OSError: a",))
    second = retries.reschedule(handler, "k", OSError(), "OSError: b", retries.Attempt(2, first.errors))
    assert second is not None
    assert second.attempt == 3 and second.queue_ms == 400 and 0.2 <= second.wait <= 0.4
    assert second.errors == ("OSError: a", "OSError: b")
    assert second.headers() == {
        wire.HEADER_RETRY_HANDLER: "k",
        wire.HEADER_ATTEMPT: 3,
        wire.HEADER_ATTEMPT_ERRORS: ["OSError: a", "OSError: b"],
    }


def test_the_last_run_and_other_exceptions_are_not_rescheduled() -> None:
    handler = Registry().add("order.created", never, retry=Retry(attempts=3, on=(OSError,)))
    assert retries.reschedule(handler, "k", OSError(), "e", retries.Attempt(3, ("a", "b"))) is None
    assert retries.reschedule(handler, "k", ValueError(), "e", retries.FIRST) is None


def test_same_named_handlers_of_one_pattern_get_distinct_keys() -> None:
    registry, one, two = Registry(), Flaky(), Flaky()
    registry.add("order.created", one)
    registry.add("order.created", two)
    registry.add("order.*", never)
    handlers = registry.match("order.created", "event")
    keys = [retries.key_of(h, handlers) for h in handlers]
    assert keys == [
        f"{__name__}.Flaky@order.created",
        f"{__name__}.Flaky@order.created#1",
        f"{__name__}.never@order.*",
    ]
    assert [retries.find(handlers, key) for key in keys] == list(handlers)
    assert retries.find(handlers, "gone@order.created") is None


def test_a_retry_copy_says_which_run_it_is() -> None:
    headers = {wire.HEADER_ATTEMPT: 3, wire.HEADER_ATTEMPT_ERRORS: ["a", "b"]}
    assert retries.attempt_of(headers) == retries.Attempt(3, ("a", "b"))
    assert retries.attempt_of({wire.HEADER_ATTEMPT_ERRORS: ["a"]}) == retries.Attempt(2, ("a",))
    assert retries.attempt_of({wire.HEADER_ATTEMPT: "x", wire.HEADER_ATTEMPT_ERRORS: 7}) == retries.FIRST


def test_the_dead_letter_reason_keeps_every_runs_error_within_its_room() -> None:
    errors = tuple(f"OSError: run {n} " + "x" * 300 for n in range(1, 11))
    reason, headers = retries.given_up("h@order.created", errors)
    assert len(reason) <= 1000
    assert all(f"run {n} " in reason for n in range(1, 11))
    assert headers == {wire.HEADER_ATTEMPT_ERRORS: list(errors)}


# -- dispatching --------------------------------------------------------------------------------
def _event(headers: dict[str, Any] | None = None, exchange: str = "tchu_events") -> Any:
    """An event as published (through `exchange`), or the worker's own copy (`exchange=""`)."""
    message = SimpleNamespace(
        body=b'{"id":1}',
        content_type=wire.JSON,
        headers=headers or {},
        properties={"message_id": "m1", "app_id": wire.COPY_APP_ID, "user_id": "svc"},
        delivery_info={"exchange": exchange, "routing_key": "order.created", "delivery_tag": 1},
    )
    assert trusted_copy(message, "svc") is None
    return message


def _dispatcher(*handlers: tuple[Flaky, Retry | None]) -> Dispatcher:
    registry = Registry()
    for handler, policy in handlers:
        registry.add("order.created", handler, retry=policy)
    return Dispatcher("orders", registry, Settings())


def test_a_failed_handler_with_runs_left_is_rescheduled_and_its_sibling_is_not() -> None:
    failing, sibling = Flaky(OSError("down")), Flaky()
    outcome = _dispatcher((failing, Retry()), (sibling, None)).event(_event())
    assert isinstance(outcome, EventOutcome) and outcome.dead_reason is None
    assert [r.handler for r in outcome.rescheduled] == [f"{__name__}.Flaky@order.created"]
    assert outcome.rescheduled[0].errors == ("OSError: down",)


def test_a_retry_copy_runs_only_the_handler_it_names() -> None:
    failing, sibling = Flaky(OSError("again")), Flaky()
    dispatcher = _dispatcher((failing, Retry(attempts=3)), (sibling, None))
    headers = {
        wire.HEADER_RETRY_HANDLER: f"{__name__}.Flaky@order.created",
        wire.HEADER_ATTEMPT: 3,
        wire.HEADER_ATTEMPT_ERRORS: ["OSError: one", "OSError: two"],
        wire.HEADER_TOPIC: "order.created",
    }
    outcome = dispatcher.event(_event(headers, exchange=""))
    assert (failing.runs, sibling.runs) == (1, 0)
    assert isinstance(outcome, EventOutcome) and not outcome.rescheduled
    assert outcome.dead_reason is not None and "after 3 attempts" in outcome.dead_reason
    assert outcome.dead_headers[wire.HEADER_ATTEMPT_ERRORS] == [
        "OSError: one",
        "OSError: two",
        "OSError: again",
    ]


def test_a_retry_copy_of_a_handler_this_service_lost_is_dead_lettered() -> None:
    sibling = Flaky()
    headers = {wire.HEADER_RETRY_HANDLER: "gone@order.created", wire.HEADER_ATTEMPT: 2}
    outcome = _dispatcher((sibling, None)).event(_event(headers, exchange=""))
    assert outcome.dead_reason is not None and outcome.dead_reason.startswith("UnknownHandler")
    assert sibling.runs == 0


def test_retry_headers_on_a_published_event_are_ignored() -> None:
    failing, sibling = Flaky(), Flaky()
    headers = {wire.HEADER_RETRY_HANDLER: f"{__name__}.Flaky@order.created", wire.HEADER_ATTEMPT: 2}
    outcome = _dispatcher((failing, Retry()), (sibling, None)).event(_event(headers))
    assert (failing.runs, sibling.runs) == (1, 1)
    assert not isinstance(outcome, EventOutcome) and outcome.dead_reason is None


def test_handlers_without_retry_fail_as_before() -> None:
    outcome = _dispatcher((Flaky(OSError("down")), None)).event(_event())
    assert not isinstance(outcome, EventOutcome)
    assert outcome.dead_reason == f"handler failed: {__name__}.Flaky: OSError: down"
