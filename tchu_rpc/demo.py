"""The demo: two services, a call, an error and one event reaching both, on memory:// or a broker."""

from __future__ import annotations

import statistics
import threading
import time
from typing import Any

from kombu import Connection

from tchu_rpc.client import Client
from tchu_rpc.config import Declare, Settings
from tchu_rpc.definitions import render
from tchu_rpc.errors import RemoteError, RpcError
from tchu_rpc.log import mask_url
from tchu_rpc.registry import Registry
from tchu_rpc.worker import Worker

USERS = {1: "Ada", 2: "Grace"}
#: The demo's services: queue name -> what `services()` returns in that order.
SERVICES = ("tchu_demo.users", "tchu_demo.mailer")


def services(got_event: dict[str, threading.Event] | None = None) -> tuple[Registry, Registry]:
    """Return the registries of the services `users` and `mailer`; their event handlers set `got_event`."""
    if got_event is None:
        got_event = {"users": threading.Event(), "mailer": threading.Event()}
    users, mailer = Registry(), Registry()

    @users.subscribe("rpc.users.get")
    def get_user(data: dict[str, Any]) -> dict[str, Any]:
        if data["id"] not in USERS:
            raise RpcError(f"no user {data['id']}", code="not_found", details={"id": data["id"]})
        return {"id": data["id"], "name": USERS[data["id"]]}

    @users.subscribe("user.*")
    def users_audit(data: dict[str, Any]) -> None:
        got_event["users"].set()

    @mailer.subscribe("user.created")
    def send_welcome(data: dict[str, Any]) -> None:
        got_event["mailer"].set()

    return users, mailer


def _settings(broker_url: str, declare: Declare = "declare") -> Settings:
    return Settings(
        broker_url=broker_url,
        events_exchange="tchu_demo_events",
        calls_exchange="tchu_demo_rpc",
        call_timeout=10,
        declare=declare,
    )


def definitions(vhost: str = "/", *, worker_user: str | None = None, caller_user: str | None = None) -> str:
    """Return the demo services' definitions document for `vhost` (`tchu-rpc demo --definitions`)."""
    users, mailer = services()
    registries = {SERVICES[0]: users, SERVICES[1]: mailer}
    return render(registries, _settings("memory://"), vhost, worker_user=worker_user, caller_user=caller_user)


def run(
    broker_url: str = "memory://",
    out: Any = print,
    *,
    caller_url: str | None = None,
    declare: Declare = "declare",
) -> int:
    """Run the demo and print what happens; return the exit code.

    `caller_url` is the client's (default `broker_url`): a caller may log in as another user than the
    workers. With `declare="passive"` nothing is declared nor deleted: an administrator imported
    `definitions()` before.
    """
    settings = _settings(broker_url, declare)
    got_event = {"users": threading.Event(), "mailer": threading.Event()}
    users, mailer = services(got_event)
    out(f"tchu_rpc demo on {mask_url(broker_url)}")
    with (
        Worker(queue=SERVICES[0], registry=users, settings=settings),
        Worker(queue=SERVICES[1], registry=mailer, settings=settings),
        Client(settings=settings.replace(broker_url=caller_url or broker_url)) as client,
    ):
        started = time.perf_counter()
        user = client.call("rpc.users.get", {"id": 1})
        out(f"call  rpc.users.get {{'id': 1}} -> {user}  ({_ms(started)} ms, first call)")
        try:
            client.call("rpc.users.get", {"id": 99})
        except RemoteError as exc:
            out(f"call  rpc.users.get {{'id': 99}} -> RemoteError {exc.type} code={exc.code}: {exc.message}")
        client.publish("user.created", {"id": 3, "name": "Linus"})
        both = all(e.wait(10) for e in got_event.values())
        out(f"event user.created reached services 'users' and 'mailer': {both}")
        timings = []
        for i in range(200):
            started = time.perf_counter()
            client.call("rpc.users.get", {"id": 1 + i % 2})
            timings.append((time.perf_counter() - started) * 1000)
        out(f"200 calls in a row: p50 {statistics.median(timings):.2f} ms, max {max(timings):.2f} ms")
    _cleanup(settings)
    return 0 if both else 1


def _ms(started: float) -> str:
    return f"{(time.perf_counter() - started) * 1000:.2f}"


def _cleanup(settings: Settings) -> None:
    if settings.broker_url.startswith("memory") or settings.declare == "passive":
        return  # passive: the topology is the operator's
    with Connection(settings.broker_url, connect_timeout=5) as conn:
        channel = conn.channel()
        for service in SERVICES:
            for suffix in ("calls", "events", "dead"):
                channel.queue_delete(f"{service}.{suffix}")
