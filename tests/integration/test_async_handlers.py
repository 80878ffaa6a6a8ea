"""`async def` handlers against the real broker: the contract of plain ones (results, errors, progress,
time limits, retries, middleware, context), each awaited on an event loop of its handler thread."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from tchu_rpc import (
    Delivery,
    HandlerTimeLimit,
    Middleware,
    Registry,
    RemoteError,
    Retry,
    RpcError,
    context,
    current_context,
    current_delivery,
    report_progress,
)
from tchu_rpc.testing import TchuFactory

pytestmark = pytest.mark.timeout(60)

WAIT = 20.0


def test_an_async_call_handler_answers_with_what_it_returns_and_sees_its_delivery(tchu: TchuFactory) -> None:
    registry = Registry()

    @registry.subscribe("rpc.aio.echo")
    async def echo(data: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0.01)  # a real await: the coroutine is run, not returned
        delivery = current_delivery()
        return {**data, "topic": delivery.topic, "tenant": current_context().get("tenant")}

    tchu.worker(registry, call_concurrency=2)
    client = tchu.client()
    with context(tenant="acme"):
        assert client.call("rpc.aio.echo", {"n": 1}) == {"n": 1, "topic": "rpc.aio.echo", "tenant": "acme"}
    assert [
        f.result(WAIT)["n"] for f in [client.call_async("rpc.aio.echo", {"n": n}) for n in range(20)]
    ] == list(range(20))


def test_an_async_handler_error_reaches_the_caller_as_data(tchu: TchuFactory) -> None:
    registry = Registry()

    @registry.subscribe("rpc.aio.fail")
    async def fail(data: Any) -> None:
        await asyncio.sleep(0)
        raise RpcError("no stock", code="out_of_stock", details={"sku": data})

    tchu.worker(registry)
    with pytest.raises(RemoteError) as caught:
        tchu.client().call("rpc.aio.fail", "A-1")
    assert (caught.value.code, caught.value.details) == ("out_of_stock", {"sku": "A-1"})


def test_an_async_handler_reports_progress_to_its_caller(tchu: TchuFactory) -> None:
    registry = Registry()

    @registry.subscribe("rpc.aio.slow")
    async def slow(data: int) -> str:
        for step in range(data):
            report_progress({"step": step})
            await asyncio.sleep(0.3)
        return "done"

    tchu.worker(registry)
    seen: list[Any] = []
    # Three steps of 0.3 s each, in a timeout of 0.5 s that only progress keeps alive
    assert tchu.client().call("rpc.aio.slow", 3, timeout=0.5, on_progress=seen.append) == "done"
    assert seen == [{"step": 0}, {"step": 1}, {"step": 2}]


def test_an_async_handler_past_the_time_limit_answers_handler_time_limit(tchu: TchuFactory) -> None:
    registry = Registry()
    release = threading.Event()

    @registry.subscribe("rpc.aio.stuck")
    async def stuck(data: Any) -> str:
        while not release.is_set():
            await asyncio.sleep(0.01)
        return "late"

    @registry.subscribe("rpc.aio.quick")
    async def quick(data: Any) -> str:
        return "quick"

    tchu.worker(registry, handler_time_limit=0.5)
    client = tchu.client()
    try:
        with pytest.raises(HandlerTimeLimit):
            client.call("rpc.aio.stuck", None, timeout=5)
        assert client.call("rpc.aio.quick", None, timeout=5) == "quick"  # on the lane's fresh thread
    finally:
        release.set()


def test_a_failing_async_event_handler_is_retried_until_it_succeeds(tchu: TchuFactory) -> None:
    registry = Registry()
    attempts: list[int] = []
    done = threading.Event()

    async def flaky(data: Any) -> None:
        await asyncio.sleep(0)
        attempts.append(len(attempts) + 1)
        if len(attempts) < 3:
            raise ConnectionError("downstream away")
        done.set()

    registry.add("order.created", flaky, retry=Retry(attempts=5, first_delay=0.1, max_delay=0.2))
    tchu.worker(registry)
    tchu.client().publish("order.created", {"id": 1})
    assert done.wait(WAIT)
    assert len(attempts) == 3


class Recording(Middleware):
    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []
        self.done = threading.Event()

    def before_handler(self, delivery: Delivery) -> None:
        self.seen.append(("before", delivery.topic))

    def after_handler(self, delivery: Delivery, result: Any) -> None:
        self.seen.append(("after", result))
        self.done.set()


def test_middleware_sees_an_async_handlers_result_not_a_coroutine(tchu: TchuFactory) -> None:
    registry = Registry()

    @registry.subscribe("rpc.aio.double")
    async def double(data: int) -> int:
        await asyncio.sleep(0)
        return data * 2

    recording = Recording()
    tchu.worker(registry, middleware=[recording])
    assert tchu.client().call("rpc.aio.double", 21) == 42
    assert recording.done.wait(WAIT)
    assert recording.seen == [("before", "rpc.aio.double"), ("after", 42)]


def test_an_async_event_handler_runs_once_per_event(tchu: TchuFactory) -> None:
    registry = Registry()
    seen: list[int] = []
    lock = threading.Condition()

    @registry.subscribe("stock.moved")
    async def moved(data: int) -> None:
        await asyncio.sleep(0)
        with lock:
            seen.append(data)
            lock.notify_all()

    tchu.worker(registry, event_concurrency=4)
    client = tchu.client()
    for future in client.publish_many(("stock.moved", n) for n in range(100)):
        future.result(WAIT)
    deadline = time.monotonic() + WAIT
    with lock:
        assert lock.wait_for(lambda: len(seen) >= 100, max(0.0, deadline - time.monotonic()))
    assert sorted(seen) == list(range(100))
