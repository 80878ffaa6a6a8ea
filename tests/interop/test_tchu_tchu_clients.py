"""A real tchu-tchu 2.x and 3.x client publishes to and calls a tchu_rpc worker that accepts tchu-tchu."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from tchu_rpc import Registry
from tchu_rpc.testing import TchuFactory

_WAIT = 10


class _Seen:
    """Events a handler received, with a condition to wait on."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._cond = threading.Condition()

    def add(self, item: Any) -> None:
        with self._cond:
            self.items.append(item)
            self._cond.notify_all()

    def wait_for(self, count: int, timeout: float = _WAIT) -> list[Any]:
        with self._cond:
            self._cond.wait_for(lambda: len(self.items) >= count, timeout)
            return list(self.items)


def _registry(seen: _Seen) -> Registry:
    registry = Registry()

    @registry.subscribe("rpc.users.echo", kind="call")
    def echo(data: dict[str, Any]) -> dict[str, Any]:
        return {"echoed": data}

    @registry.subscribe("rpc.users.fail", kind="call")
    def fail(data: dict[str, Any]) -> dict[str, Any]:
        raise ValueError(f"no user {data['id']}")

    @registry.subscribe("users.*", kind="event")
    def created(data: dict[str, Any]) -> None:
        seen.add(data)

    return registry


def _run(tchu: TchuFactory, run_tchu_tchu: Callable[..., Any], ops: list[list[Any]]) -> list[dict[str, Any]]:
    exchange = tchu.settings.events_exchange
    out: list[dict[str, Any]] = run_tchu_tchu(tchu.broker_url, exchange, tchu.prefix, ops)
    return out


def test_tchu_tchu_call_gets_the_handlers_result(
    tchu: TchuFactory, run_tchu_tchu: Callable[..., Any]
) -> None:
    # Given a worker that accepts tchu-tchu
    tchu.worker(_registry(_Seen()), accept_tchu_tchu=True)
    # When an unchanged TchuClient calls it three times
    ops = [["call", "rpc.users.echo", {"n": n, "name": "ada"}] for n in range(3)]
    results = _run(tchu, run_tchu_tchu, ops)
    # Then every call gets its handler's result, without tchu-tchu's `_tchu_meta`
    assert results == [{"ok": {"echoed": {"n": n, "name": "ada"}}} for n in range(3)]


def test_tchu_tchu_call_reports_a_handler_error_as_tchu_tchu_does(
    tchu: TchuFactory, run_tchu_tchu: Callable[..., Any]
) -> None:
    tchu.worker(_registry(_Seen()), accept_tchu_tchu=True)
    [result] = _run(tchu, run_tchu_tchu, [["call", "rpc.users.fail", {"id": 7}]])
    assert result == {"error": "PublishError", "message": "RPC call failed: Handler 'fail' failed: no user 7"}


@pytest.mark.parametrize("tchu_tchu_python", ["3"], indirect=True)
def test_serverless_producer_events_are_handled(tchu: TchuFactory, run_tchu_tchu: Callable[..., Any]) -> None:
    # Given a worker that accepts tchu-tchu, and 3.x's ServerlessProducer (Celery's protocol v1)
    seen = _Seen()
    tchu.worker(_registry(seen), accept_tchu_tchu=True)
    results = _run(tchu, run_tchu_tchu, [["serverless", "users.deleted", {"id": n}] for n in range(2)])
    assert all("ok" in r for r in results), results
    assert sorted(seen.wait_for(2), key=lambda d: d["id"]) == [{"id": 0}, {"id": 1}]


def test_tchu_tchu_events_are_handled_once(tchu: TchuFactory, run_tchu_tchu: Callable[..., Any]) -> None:
    seen = _Seen()
    tchu.worker(_registry(seen), accept_tchu_tchu=True)
    ops = [["publish", "users.created", {"n": n}] for n in range(5)]
    results = _run(tchu, run_tchu_tchu, ops)
    assert all("ok" in r for r in results), results
    assert sorted(seen.wait_for(5), key=lambda d: d["n"]) == [{"n": n} for n in range(5)]
    assert len(seen.wait_for(6, timeout=0.5)) == 5  # and no copies
