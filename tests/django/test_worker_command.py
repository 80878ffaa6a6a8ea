"""`manage.py tchu_rpc_worker`: the supervised worker handles the project's events and calls."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from conftest import ALIASES, PROJECT
from django.db import transaction
from django.test import override_settings
from shop.models import Order

from tchu_rpc import Client, NoRoute
from tchu_rpc.django import close_client
from tchu_rpc.testing import TchuFactory

START_WITHIN = 30.0


def _until(check: Callable[[], Any], what: str, within: float = START_WITHIN) -> Any:
    deadline = time.monotonic() + within
    while True:
        try:
            result = check()
        except NoRoute:  # the worker has not bound its queue yet
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within} s: {what}")
        time.sleep(0.1)


@pytest.fixture
def worker_client(tchu: TchuFactory, backend: str, tmp_path: Any) -> Iterator[Client]:
    """Run `manage.py tchu_rpc_worker` on `backend`; yield a client once it answers calls."""
    env = {
        **os.environ,
        "TCHU_TEST_DATABASE": backend,
        "TCHU_RPC_BROKER_URL": tchu.settings.broker_url,
        "TCHU_RPC_EVENTS_EXCHANGE": tchu.settings.events_exchange,
        "TCHU_RPC_CALLS_EXCHANGE": tchu.settings.calls_exchange,
    }
    log = (tmp_path / "worker.log").open("w")
    command = [sys.executable, "manage.py", "tchu_rpc_worker", "--queue", tchu.service("shop")]
    proc = subprocess.Popen(command, cwd=PROJECT, env=env, stdout=log, stderr=subprocess.STDOUT)
    client = tchu.client()
    # The test process publishes (auto_publish) on the test's exchanges too.
    fields = ("broker_url", "events_exchange", "calls_exchange")
    overridden = override_settings(TCHU_RPC={name: getattr(tchu.settings, name) for name in fields})
    overridden.enable()
    try:
        _until(lambda: proc.poll() is not None or client.call("rpc.shop.seen", {"pk": 0}) == [], "worker up")
        assert proc.poll() is None, (tmp_path / "worker.log").read_text()
        yield client
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        overridden.disable()
        close_client()


def test_command_worker_handles_the_event_and_answers_a_call_reading_the_database(
    worker_client: Client, backend: str
) -> None:
    # Given a running worker, when an order is committed,
    using = ALIASES[backend]
    with transaction.atomic(using=using):
        order = Order.objects.using(using).create(item="tea", quantity=5)
    # then its subscriber handles shop.order.created, and a call reads the order from the database.
    seen = _until(lambda: worker_client.call("rpc.shop.seen", {"pk": order.pk}), "event handled", 10)
    assert seen == ["shop.order.created"]
    answer = worker_client.call("rpc.shop.order.get", {"pk": order.pk})
    assert answer == {
        "item": "tea",
        "quantity": 5,
        "vendor": "postgresql" if backend == "postgres" else "sqlite",
    }


@pytest.mark.parametrize("backend", ["postgres"])
def test_command_worker_reconnects_after_its_database_connection_is_killed(
    worker_client: Client, backend: str
) -> None:
    # Given a worker holding a persistent connection (CONN_MAX_AGE=None),
    order = Order.objects.using("postgres").create(item="tea")
    pid = worker_client.call("rpc.shop.backend_pid", None)
    # when the database ends that connection (as a restart does),
    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as conn:
        assert conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)
    # then the next call is answered on a new connection.
    assert worker_client.call("rpc.shop.order.get", {"pk": order.pk})["item"] == "tea"
    assert worker_client.call("rpc.shop.backend_pid", None) != pid
