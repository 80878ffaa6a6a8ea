"""Topology: queue and exchange names and declarations for a service."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from kombu import Exchange, Queue

from tchu_rpc import topology
from tchu_rpc.config import Settings
from tchu_rpc.errors import ConfigError

SETTINGS = Settings(events_exchange="ev_x", calls_exchange="rpc_x")
PATTERNS = ("rpc.users.get", "rpc.users.*", "rpc.admin.#")


def test_queue_names_follow_the_service() -> None:
    assert topology.call_queue("users", SETTINGS, PATTERNS).name == "users.calls"
    assert topology.event_queue("users", SETTINGS, PATTERNS).name == "users.events"
    assert topology.dead_letter_queue("users", SETTINGS).name == "users.dead"


@pytest.mark.parametrize(
    ("make", "name"),
    [(topology.events_exchange, "ev_x"), (topology.calls_exchange, "rpc_x")],
    ids=["events", "calls"],
)
def test_exchanges_are_durable_topic_exchanges_named_by_settings(
    make: Callable[[Settings], Exchange], name: str
) -> None:
    exchange = make(SETTINGS)
    assert exchange.name == name
    assert exchange.type == "topic"
    assert exchange.durable is True
    assert exchange.auto_delete is False
    assert not exchange.arguments


def test_default_exchange_names() -> None:
    assert topology.events_exchange(Settings()).name == "tchu_events"
    assert topology.calls_exchange(Settings()).name == "tchu_rpc"


@pytest.mark.parametrize("service", ["users", "billing-v2", "a", "x" * 200, "é" * 100])
def test_check_service_returns_a_valid_name(service: str) -> None:
    assert topology.check_service(service) == service


@pytest.mark.parametrize(
    "service",
    ["", "amq.users", "amq.", "x" * 201, "é" * 101],
    ids=["empty", "amq-prefix", "amq-only", "201-bytes", "202-utf8-bytes"],
)
def test_check_service_rejects_bad_names_with_config_error(service: str) -> None:
    with pytest.raises(ConfigError, match="service queue name"):
        topology.check_service(service)


def test_call_queue_is_bound_to_the_calls_exchange_with_the_patterns() -> None:
    queue = topology.call_queue("users", SETTINGS, PATTERNS)
    assert {b.routing_key for b in queue.bindings} == set(PATTERNS)
    assert {b.exchange.name for b in queue.bindings} == {"rpc_x"}
    assert all(b.exchange.type == "topic" for b in queue.bindings)


def test_event_queue_is_bound_to_the_events_exchange_with_the_patterns() -> None:
    patterns = ("user.created", "user.*")
    queue = topology.event_queue("users", SETTINGS, patterns)
    assert {b.routing_key for b in queue.bindings} == set(patterns)
    assert {b.exchange.name for b in queue.bindings} == {"ev_x"}


def test_queue_without_patterns_has_no_bindings() -> None:
    assert not topology.call_queue("users", SETTINGS, ()).bindings


@pytest.mark.parametrize(
    "make",
    [
        lambda s: topology.call_queue("users", s, PATTERNS),
        lambda s: topology.event_queue("users", s, PATTERNS),
        lambda s: topology.dead_letter_queue("users", s),
    ],
    ids=["calls", "events", "dead"],
)
def test_service_queues_are_durable_classic_queues_by_default(make: Callable[[Settings], Queue]) -> None:
    queue = make(SETTINGS)
    assert queue.durable is True
    assert queue.auto_delete is False
    assert queue.exclusive is False
    # No arguments, so the declaration matches queues that existing deployments declared.
    assert not queue.queue_arguments


@pytest.mark.parametrize(
    "make",
    [
        lambda s: topology.call_queue("users", s, PATTERNS),
        lambda s: topology.event_queue("users", s, PATTERNS),
        lambda s: topology.dead_letter_queue("users", s),
    ],
    ids=["calls", "events", "dead"],
)
def test_service_queues_are_quorum_queues_when_asked(make: Callable[[Settings], Queue]) -> None:
    queue = make(SETTINGS.replace(queue_type="quorum"))
    assert queue.queue_arguments == {"x-queue-type": "quorum"}
    assert queue.durable is True


def test_reply_queue_is_private_and_unique() -> None:
    first, second = topology.reply_queue(), topology.reply_queue()
    assert first.name != second.name
    assert first.name.startswith("tchu.reply.")
    assert first.exclusive is True
    assert first.auto_delete is True
    assert first.durable is False


def test_direct_reply_to_pseudo_queue_name() -> None:
    assert topology.DIRECT_REPLY_TO == "amq.rabbitmq.reply-to"
