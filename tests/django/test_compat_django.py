"""A Django project on the compat API: `TchuClient()` reads `TCHU_RPC`, `manage.py tchu_rpc_worker
--accept-tchu-tchu` answers its calls and handles its events."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import PROJECT
from django.test import override_settings
from shop.models import Order
from test_worker_command import _until

from tchu_rpc.compat import TchuClient
from tchu_rpc.django import close_client
from tchu_rpc.testing import TchuFactory


@pytest.fixture
def compat_worker(tchu: TchuFactory, django_databases: None, tmp_path: Any) -> Iterator[TchuClient]:
    """Run `manage.py tchu_rpc_worker --accept-tchu-tchu` on PostgreSQL; yield `TchuClient()` once it answers.

    The test process names the broker and exchanges only in Django's `TCHU_RPC` dict.
    """
    env = {
        **os.environ,
        "TCHU_TEST_DATABASE": "postgres",
        "TCHU_RPC_BROKER_URL": tchu.settings.broker_url,
        "TCHU_RPC_EVENTS_EXCHANGE": tchu.settings.events_exchange,
        "TCHU_RPC_CALLS_EXCHANGE": tchu.settings.calls_exchange,
    }
    log = (tmp_path / "worker.log").open("w")
    queue = tchu.service("shop")
    command = [sys.executable, "manage.py", "tchu_rpc_worker", "--queue", queue, "--accept-tchu-tchu"]
    proc = subprocess.Popen(command, cwd=PROJECT, env=env, stdout=log, stderr=subprocess.STDOUT)
    fields = ("broker_url", "events_exchange", "calls_exchange")
    overridden = override_settings(TCHU_RPC={name: getattr(tchu.settings, name) for name in fields})
    overridden.enable()
    try:
        client = TchuClient()
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


def test_tchu_client_inside_django_is_configured_by_the_tchu_rpc_settings_dict(
    tchu: TchuFactory, django_databases: None
) -> None:
    # Given TCHU_RPC naming the test's exchanges (and no TCHU_RPC_* variable naming them)
    assert "TCHU_RPC_EVENTS_EXCHANGE" not in os.environ
    with override_settings(TCHU_RPC={"events_exchange": tchu.settings.events_exchange}):
        try:
            # When a TchuClient is made, then its client reads the dict, in tchu-tchu's format
            settings = TchuClient().client.settings
            assert settings.events_exchange == tchu.settings.events_exchange
            assert settings.tchu_tchu_format is True
        finally:
            close_client()
    # and a changed dict makes a new client.
    with override_settings(TCHU_RPC={"tchu_tchu_format": False}):
        try:
            assert TchuClient().client.settings.tchu_tchu_format is False
        finally:
            close_client()


def test_command_worker_with_accept_tchu_tchu_answers_and_handles_a_tchu_client(
    compat_worker: TchuClient,
) -> None:
    # Given `manage.py tchu_rpc_worker --accept-tchu-tchu` and TchuClient() configured by TCHU_RPC
    order = Order.objects.using("postgres").create(item="tea", quantity=2)
    # When it calls, then the call is answered (tchu-tchu's format, direct reply-to)
    answer = compat_worker.call("rpc.shop.order.get", {"pk": order.pk}, timeout=10)
    assert answer == {"item": "tea", "quantity": 2, "vendor": "postgresql"}
    # and its event is handled, once.
    compat_worker.publish("shop.order.created", {"_meta": {"pk": -order.pk}})
    seen = _until(lambda: compat_worker.call("rpc.shop.seen", {"pk": -order.pk}), "event handled", 10)
    assert seen == ["shop.order.created"]
