"""One answer per call: the mistakes that make a call run once per service are loud or impossible."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from tchu_rpc import ConfigError, Registry, Worker
from tchu_rpc.testing import TchuFactory, capture_logs

WAIT = 10.0


def _calls(runs: list[str], service: str) -> Registry:
    registry = Registry()

    @registry.subscribe("rpc.once.work")
    def work(data: Any) -> str:
        runs.append(service)
        return service

    return registry


def test_a_second_worker_on_the_same_call_handlers_in_a_process_is_refused(tchu: TchuFactory) -> None:
    # Given a worker serving a registry's call handlers as one service
    registry = _calls([], "first")
    tchu.worker(registry, "first")

    # When a second worker of this process would serve the same handlers as another service
    second = Worker(queue=tchu.service("second"), registry=registry, settings=tchu.settings)

    # Then it refuses to start, saying why and what to do, and the first still answers
    with pytest.raises(ConfigError, match="every call would run once per service"):
        second.start()
    second.stop(0)
    assert tchu.client().call("rpc.once.work", None, timeout=WAIT) == "first"


def test_the_same_registry_may_serve_another_service_once_the_first_worker_stopped(tchu: TchuFactory) -> None:
    runs: list[str] = []
    registry = _calls(runs, "handler")
    tchu.worker(registry, "first").stop()
    assert tchu.worker(registry, "second")
    assert tchu.client().call("rpc.once.work", None, timeout=WAIT) == "handler"
    assert runs == ["handler"]


def test_an_events_only_registry_may_serve_several_services(tchu: TchuFactory) -> None:
    seen: list[int] = []
    registry = Registry()
    registry.subscribe("once.happened")(seen.append)
    tchu.worker(registry, "first")
    assert tchu.worker(registry, "second")


@pytest.mark.timeout(60)
def test_a_call_answered_by_two_services_names_both_in_reply_dropped(tchu: TchuFactory) -> None:
    # Given two services (their own registries) that both bind the same call topic
    runs: list[str] = []
    tchu.worker(_calls(runs, "alpha"), "alpha")
    tchu.worker(_calls(runs, "beta"), "beta")
    client = tchu.client()

    # When the call is made: both run it, the caller keeps the first answer
    with capture_logs() as logs:
        first = client.call("rpc.once.work", None, timeout=WAIT)
        dropped = threading.Event()
        deadline = threading.Timer(WAIT, dropped.set)
        deadline.start()
        try:
            while not dropped.is_set() and not [e for e in logs if e["event"] == "reply_dropped"]:
                dropped.wait(0.01)
        finally:
            deadline.cancel()

    # Then the dropped answer's warning names the service that sent it and the one that came first
    (event,) = [e for e in logs if e["event"] == "reply_dropped"]
    second = "beta" if first == "alpha" else "alpha"
    assert event["service"].endswith(second), event
    assert event["call_outcome"].endswith(f"from {tchu.prefix}.{first}"), event
    assert sorted(runs) == ["alpha", "beta"]
