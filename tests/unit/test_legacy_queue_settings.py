"""Take-over of a tchu-tchu queue: settings, CLI and the bindings it makes (no broker)."""

from __future__ import annotations

import pytest

from tchu_rpc import Settings, topology
from tchu_rpc.cli import build_parser
from tchu_rpc.errors import ConfigError


def _keys(queue: object) -> set[tuple[str, str]]:
    return {(b.exchange.name, b.routing_key) for b in queue.bindings}  # type: ignore[attr-defined]


def test_legacy_queue_implies_accepting_tchu_tchu() -> None:
    settings = Settings().for_worker(None, None, "orders_queue")
    assert (settings.legacy_queue, settings.accept_tchu_tchu) == ("orders_queue", True)


def test_legacy_queue_takes_the_event_patterns_and_tchu_tchu_calls() -> None:
    # Given a worker taking over `orders_queue`, with events and calls
    settings = Settings(legacy_queue="orders_queue", accept_tchu_tchu=True)
    # Then its own event queue is bound with nothing, its call queue only on the calls exchange
    assert _keys(topology.event_queue("orders", settings, ("orders.created",))) == set()
    assert _keys(topology.call_queue("orders", settings, ("rpc.orders.get",))) == {
        ("tchu_rpc", "rpc.orders.get")
    }
    # And the legacy queue, declared as tchu-tchu does (no arguments), gets both on the events exchange
    queue = topology.legacy_queue(settings, ("orders.created", "rpc.orders.get"))
    assert (queue.name, queue.durable, queue.auto_delete, queue.queue_arguments) == (
        "orders_queue",
        True,
        False,
        None,
    )
    assert _keys(queue) == {("tchu_events", "orders.created"), ("tchu_events", "rpc.orders.get")}


@pytest.mark.parametrize("name", ["", "amq.orders"])
def test_legacy_queue_refuses_names_rabbitmq_refuses(name: str) -> None:
    with pytest.raises(ConfigError, match="legacy_queue"):
        Settings(legacy_queue=name)


def test_cli_worker_takes_a_legacy_queue() -> None:
    args = build_parser().parse_args(
        ["worker", "handlers", "--queue", "orders", "--legacy-queue", "orders_queue"]
    )
    assert args.legacy_queue == "orders_queue"


def test_other_celery_tasks_in_a_legacy_queue_are_dead_lettered_not_run() -> None:
    from types import SimpleNamespace

    from tchu_rpc import Registry
    from tchu_rpc._worker import legacy
    from tchu_rpc._worker.dispatch import Dispatcher

    # Given a worker's dispatcher that accepts tchu-tchu, and a service's own Celery task in its queue
    dispatcher = Dispatcher("orders", Registry(), Settings(accept_tchu_tchu=True))
    message = SimpleNamespace(
        headers={"task": "tchu_tchu.handler.orders.record", "id": "t1"},
        body=b'[[{"n": 1}], {}, {}]',
        properties={},
        delivery_info={"routing_key": "orders_queue", "exchange": "tchu_events"},
        content_type="application/json",
    )
    # Then it is dead-lettered, saying which task it is
    outcome = legacy.event(dispatcher, message, None)
    assert outcome.dead_reason is not None and "tchu_tchu.handler.orders.record" in outcome.dead_reason
