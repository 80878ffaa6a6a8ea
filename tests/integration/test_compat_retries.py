"""tchu-tchu's `celery_options` retries under compat, on the real broker: Celery's run count, then dead."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from kombu import Connection
from test_retries import count, get_one, start

from tchu_rpc import Registry, Worker, wire
from tchu_rpc.compat import registering_on, subscribe
from tchu_rpc.testing import TchuFactory

__all__ = ["start"]  # the fixture, shared with test_retries


class PaymentGatewayDown(Exception):
    pass


def test_celery_autoretry_options_run_the_handler_max_retries_plus_one_times_then_dead_letter(
    tchu: TchuFactory, start: Callable[..., Worker]
) -> None:
    # Given a tchu-tchu subscriber with Celery's autoretry options, unchanged
    runs: list[int] = []
    changed = threading.Condition()
    with registering_on(Registry()) as registry:

        @subscribe(
            "payment.requested",
            celery_options={"autoretry_for": (PaymentGatewayDown,), "max_retries": 3, "retry_backoff": True},
        )
        def charge(data: Any) -> None:
            with changed:
                runs.append(data["id"])
                changed.notify_all()
            raise PaymentGatewayDown(f"down {len(runs)}")

    worker = start(registry)
    # When its event arrives and the handler always fails
    tchu.client().publish("payment.requested", {"id": 7})
    # then it runs as Celery would run the task: once and max_retries=3 times again (backoff 1, 2, 4 s,
    # each jittered to half or more), and its message is dead-lettered after the last run, once.
    with Connection(tchu.broker_url) as conn:
        dead = get_one(conn, f"{worker.service}.dead", timeout=20)
        assert count(conn, f"{worker.service}.dead") == 0
    assert runs == [7, 7, 7, 7]
    assert dead.headers[wire.HEADER_ATTEMPT_ERRORS] == [f"PaymentGatewayDown: down {n}" for n in range(1, 5)]
    assert "after 4 attempts" in dead.headers[wire.HEADER_ERROR]


def test_an_error_outside_autoretry_for_is_dead_lettered_after_one_run(
    tchu: TchuFactory, start: Callable[..., Worker]
) -> None:
    runs: list[int] = []
    with registering_on(Registry()) as registry:

        @subscribe(
            "payment.refunded", celery_options={"autoretry_for": (PaymentGatewayDown,), "max_retries": 3}
        )
        def refund(data: Any) -> None:
            runs.append(data["id"])
            raise KeyError("not retried")

    worker = start(registry)
    tchu.client().publish("payment.refunded", {"id": 8})
    with Connection(tchu.broker_url) as conn:
        dead = get_one(conn, f"{worker.service}.dead")
    assert runs == [8]
    assert "KeyError" in dead.headers[wire.HEADER_ERROR]
