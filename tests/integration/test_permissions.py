"""Least privilege against the real broker: each role in a private vhost with restricted users.

Each test makes its own vhost and users (random names, deleted afterwards), imports the definitions
document `tchu_rpc.definitions` prints with `rabbitmqctl import_definitions`, and runs clients and
workers as users with exactly the permissions that document names. The shared broker is never
reconfigured otherwise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tchu_rpc import (
    AccessRefused,
    Client,
    ConfigError,
    ConnectionLost,
    Registry,
    Retry,
    Settings,
    Worker,
    definitions,
    demo,
)
from tchu_rpc.process import EXIT_CONFIG

_CTL_TIMEOUT = 60
#: What a refused operation might raise: caught broadly, so that a test says which one it got.
TchuErrorTypes = (AccessRefused, ConnectionLost, ConfigError)


def _ctl(*args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        ["rabbitmqctl", "-q", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=_CTL_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"rabbitmqctl {' '.join(args)} failed: {done.stdout} {done.stderr}")
    return done.stdout


class PrivateVhost:
    """A vhost of its own on the local broker, with users made on demand; all deleted by `cleanup`."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.name = f"tchu_perm_{uuid.uuid4().hex[:10]}"
        self.users: list[str] = []
        _ctl("add_vhost", self.name)

    def user(self, role: str) -> tuple[str, str]:
        """Make a user without any permission; return its name and its URL into this vhost."""
        name, password = f"{self.name}_{role}", uuid.uuid4().hex
        _ctl("add_user", name, password)
        self.users.append(name)
        return name, f"amqp://{name}:{password}@{self.host}/{self.name}"

    def grant(self, user: str, permission: definitions.Permission) -> None:
        """Give `user` `permission` in this vhost, topic permissions included."""
        _ctl(
            "set_permissions", "-p", self.name, user, permission.configure, permission.write, permission.read
        )
        for topic in permission.topics:
            _ctl("set_topic_permissions", "-p", self.name, user, topic.exchange, topic.write, topic.read)

    def load(self, document: dict[str, Any]) -> None:
        """Import `document` with `rabbitmqctl import_definitions`, and wait until its bindings are there."""
        # From standard input: rabbitmqctl reads files as the broker's user, which cannot read ours.
        _ctl("import_definitions", "--format", "json", stdin=json.dumps(document))
        wanted = len(document["bindings"])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the import may finish after the command returned
            listed = _ctl("list_bindings", "-p", self.name, "-s", "source_name", "destination_name")
            if sum(1 for line in listed.splitlines() if line.split("\t")[0]) >= wanted:
                return
            time.sleep(0.2)
        raise AssertionError(f"the import into {self.name} did not finish within 30 s")

    def cleanup(self) -> None:
        _ctl("delete_vhost", self.name)
        for user in self.users:
            _ctl("delete_user", user)


@pytest.fixture
def vhost(tchu_broker_url: str) -> Iterator[PrivateVhost]:
    host = tchu_broker_url.split("@")[-1].split("/")[0]
    made = PrivateVhost(host)
    yield made
    made.cleanup()


def _service() -> tuple[Registry, threading.Event, list[Any]]:
    """A service `users`: quick and slow calls, an event handler; the slow ones wait for `release`."""
    registry, release, seen = Registry(), threading.Event(), []

    @registry.subscribe("rpc.users.get")
    def get(data: Any) -> Any:
        return {"id": data["id"], "name": "Ada"}

    @registry.subscribe("rpc.users.slow.*")
    def slow(data: Any) -> Any:
        assert release.wait(20)
        return data

    @registry.subscribe("rpc.billing.charge")
    def charge(data: Any) -> Any:
        seen.append(("charged", data))
        return data

    @registry.subscribe("user.*")
    def on_user(data: Any) -> None:
        seen.append(("event", data))

    return registry, release, seen


def _settings(url: str, **overrides: Any) -> Settings:
    return Settings(broker_url=url, call_timeout=10, publish_timeout=10, connect_timeout=5, **overrides)


def _wait_for(condition: Any, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture
def topology(vhost: PrivateVhost) -> tuple[Registry, threading.Event, list[Any], dict[str, Any]]:
    """Import the `users` service's definitions into the vhost; return the service and the document."""
    registry, release, seen = _service()
    document = definitions.document({"users": registry}, Settings(), vhost.name)
    vhost.load(document)
    return registry, release, seen, document


def _roles(document: dict[str, Any]) -> dict[str, definitions.Permission]:
    roles = {}
    for role, given in document["tchu_rpc"]["roles"].items():
        topics = tuple(definitions.TopicPermission(**topic) for topic in given["topics"])
        roles[role] = definitions.Permission(given["configure"], given["write"], given["read"], topics)
    return roles


def test_worker_without_configure_permission_serves_calls_and_events_with_passive_declares(
    vhost: PrivateVhost, topology: Any
) -> None:
    # Given the topology imported, a worker user and a caller user with the printed permissions
    registry, release, seen, document = topology
    release.set()
    roles = _roles(document)
    worker_user, worker_url = vhost.user("worker")
    vhost.grant(worker_user, roles["worker"])
    caller_user, caller_url = vhost.user("caller")
    vhost.grant(caller_user, roles["caller"])
    assert roles["worker"].configure == "^$"

    # When the worker and the client only check what exists
    with (
        Worker(queue="users", registry=registry, settings=_settings(worker_url, declare="passive")),
        Client(settings=_settings(caller_url, declare="passive")) as client,
    ):
        # Then calls and events are served
        assert client.call("rpc.users.get", {"id": 1}) == {"id": 1, "name": "Ada"}
        client.publish("user.created", {"id": 2})
        assert _wait_for(lambda: ("event", {"id": 2}) in seen)


def test_worker_that_must_declare_without_the_permission_is_refused_with_access_refused(
    vhost: PrivateVhost, topology: Any
) -> None:
    # Given a worker user with the worker role's permissions only (no configure)
    registry, _, _, document = topology
    user, url = vhost.user("worker")
    vhost.grant(user, _roles(document)["worker"])

    # When the worker starts with declares
    worker = Worker(queue="users", registry=registry, settings=_settings(url))
    started = time.monotonic()
    with pytest.raises(TchuErrorTypes) as caught:
        worker.start()

    # Then it is refused at once with AccessRefused naming the method, the resource and the user
    assert type(caught.value) is AccessRefused, repr(caught.value)
    assert caught.value.operation == "Exchange.declare" and caught.value.user == user
    assert "tchu_rpc" in str(caught.value) and "ACCESS_REFUSED" in str(caught.value)
    assert time.monotonic() - started < 5


def test_passive_worker_names_what_is_missing_and_how_to_create_it(vhost: PrivateVhost) -> None:
    # Given an empty vhost and a user that may consume and publish but not configure
    registry, _, _ = _service()
    user, url = vhost.user("worker")
    vhost.grant(user, definitions.Permission("^$", ".*", ".*"))

    # When a worker with passive declares starts there
    with pytest.raises(TchuErrorTypes) as caught:
        Worker(queue="users", registry=registry, settings=_settings(url, declare="passive")).start()

    # Then it says, once, each missing exchange and queue by name, and what to run
    assert type(caught.value) is ConfigError, repr(caught.value)
    for name in (
        "exchange 'tchu_rpc'",
        "exchange 'tchu_events'",
        "queue 'users.calls'",
        "queue 'users.dead'",
    ):
        assert name in str(caught.value)
    assert "tchu-rpc topology" in str(caught.value)


def test_caller_only_user_publishes_and_calls(vhost: PrivateVhost, topology: Any) -> None:
    # Given a worker run as an administrator would, and a caller with the caller role only
    registry, release, seen, document = topology
    release.set()
    worker_user, worker_url = vhost.user("worker")
    vhost.grant(worker_user, _roles(document)["worker"])
    caller_user, caller_url = vhost.user("caller")
    vhost.grant(caller_user, _roles(document)["caller"])

    with (
        Worker(queue="users", registry=registry, settings=_settings(worker_url, declare="passive")),
        Client(settings=_settings(caller_url, declare="passive")) as client,
    ):
        # When it calls and publishes (one of each on a topic it used before, one on a new topic)
        results = [client.call("rpc.users.get", {"id": n}) for n in (1, 2)]
        slow = client.call("rpc.users.slow.x", {"n": 1})
        client.publish("user.created", {"id": 3})
        client.publish("user.deleted", {"id": 4})

        # Then all of it goes through
        assert results == [{"id": 1, "name": "Ada"}, {"id": 2, "name": "Ada"}] and slow == {"n": 1}
        assert _wait_for(lambda: ("event", {"id": 3}) in seen and ("event", {"id": 4}) in seen)


def test_caller_declaring_without_configure_permission_fails_at_once_with_access_refused(
    vhost: PrivateVhost, topology: Any
) -> None:
    # Given a caller-only user, and a client that declares the exchanges (the default)
    _, _, _, document = topology
    user, url = vhost.user("caller")
    vhost.grant(user, _roles(document)["caller"])
    with Client(settings=_settings(url)) as client:
        # When it calls and publishes
        for attempt in (
            lambda: client.call("rpc.users.get", {"id": 1}),
            lambda: client.publish("user.created", {"id": 1}),
        ):
            started = time.monotonic()
            with pytest.raises(TchuErrorTypes) as caught:
                attempt()
            # Then each fails at once with AccessRefused (not ConnectionLost after retries)
            assert type(caught.value) is AccessRefused, repr(caught.value)
            assert caught.value.operation == "Exchange.declare" and caught.value.user == user
            assert time.monotonic() - started < 3


def test_caller_restricted_by_topic_permissions_is_refused_outside_them_and_its_calls_in_flight_succeed(
    vhost: PrivateVhost, topology: Any
) -> None:
    # Given a caller whose topic permissions allow only rpc.users.* calls and user.* events
    registry, release, seen, document = topology
    worker_user, worker_url = vhost.user("worker")
    vhost.grant(worker_user, _roles(document)["worker"])
    caller_user, caller_url = vhost.user("caller")
    calls, events = Settings().calls_exchange, Settings().events_exchange
    lane = (
        definitions.TopicPermission(calls, definitions.patterns_regex(["rpc.users.#"])),
        definitions.TopicPermission(events, definitions.patterns_regex(["user.*"])),
    )
    vhost.grant(
        caller_user, definitions.Permission("^$", definitions.names_regex([calls, events]), "^$", lane)
    )
    worker_settings = _settings(worker_url, declare="passive", call_concurrency=3)

    with (
        Worker(queue="users", registry=registry, settings=worker_settings),
        Client(settings=_settings(caller_url, declare="passive")) as client,
    ):
        # And calls in flight: one on a topic used before, one on a topic not used yet
        assert client.call("rpc.users.get", {"id": 1})["name"] == "Ada"
        release.set()
        assert client.call("rpc.users.slow.a", {"n": 0}) == {"n": 0}
        release.clear()
        in_flight = [
            client.call_async("rpc.users.slow.a", {"n": 1}),
            client.call_async("rpc.users.slow.b", {"n": 2}),
        ]

        # When it calls and publishes outside its topics
        started = time.monotonic()
        with pytest.raises(TchuErrorTypes) as call_refused:
            client.call("rpc.billing.charge", {"amount": 1})
        with pytest.raises(TchuErrorTypes) as publish_refused:
            client.publish("billing.charged", {"amount": 1})
        took = time.monotonic() - started

        # Then each is refused at once with AccessRefused naming the topic and the user
        for caught, topic in ((call_refused, "rpc.billing.charge"), (publish_refused, "billing.charged")):
            assert type(caught.value) is AccessRefused, repr(caught.value)
            assert caught.value.operation == "Basic.publish" and caught.value.user == caller_user
            assert topic in str(caught.value)
        assert took < 3
        # And the calls in flight, and the calls and events after, succeed
        release.set()
        assert [future.result(10) for future in in_flight] == [{"n": 1}, {"n": 2}]
        assert client.call("rpc.users.get", {"id": 5}) == {"id": 5, "name": "Ada"}
        client.publish("user.created", {"id": 6})
        assert _wait_for(lambda: ("event", {"id": 6}) in seen)
        with pytest.raises(TchuErrorTypes) as again:
            client.call("rpc.billing.charge", {"amount": 2})
        assert type(again.value) is AccessRefused
        assert not [item for item in seen if item[0] == "charged"]  # nothing refused ever ran


def test_demo_definitions_import_into_an_empty_vhost_and_the_demo_runs_with_the_printed_permissions(
    vhost: PrivateVhost, tmp_path: Path
) -> None:
    # Given the users, and the demo's document naming them, imported into the empty vhost
    worker_user, worker_url = vhost.user("worker")
    caller_user, caller_url = vhost.user("caller")
    document = json.loads(demo.definitions(vhost.name, worker_user=worker_user, caller_user=caller_user))
    assert {p["user"] for p in document["permissions"]} == {worker_user, caller_user}
    vhost.load(document)
    assert _wait_for(lambda: worker_user in _ctl("list_permissions", "-p", vhost.name), 30)
    assert _wait_for(lambda: caller_user in _ctl("list_topic_permissions", "-p", vhost.name), 30)

    # When the demo runs there, its workers and its client as those users, declaring nothing
    lines: list[str] = []
    code = demo.run(worker_url, out=lines.append, caller_url=caller_url, declare="passive")

    # Then it runs through
    assert code == 0, lines
    assert any("reached services 'users' and 'mailer': True" in line for line in lines)


_HANDLERS = """
from tchu_rpc import subscribe

@subscribe("rpc.users.get")
def get(data):
    return data
"""


def test_worker_command_refused_at_start_exits_78_with_the_brokers_text(
    vhost: PrivateVhost, topology: Any, tmp_path: Path
) -> None:
    # Given a worker user without configure permission, and `tchu-rpc worker` that declares
    _, _, _, document = topology
    user, url = vhost.user("worker")
    vhost.grant(user, _roles(document)["worker"])
    module = tmp_path / "perm_handlers.py"
    module.write_text(_HANDLERS)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TCHU_RPC_")}

    # When it runs
    done = subprocess.run(
        [sys.executable, "-m", "tchu_rpc", "worker", str(module), "--queue", "users", "--broker", url],
        capture_output=True,
        text=True,
        timeout=90,
        env={**env, "TCHU_RPC_CONNECT_TIMEOUT": "5"},
        cwd=tmp_path,
        check=False,
    )

    # Then it gives up with the configuration error's exit code, saying what the broker refused
    output = done.stdout + done.stderr
    assert done.returncode == EXIT_CONFIG, output
    assert "ACCESS_REFUSED" in output and "AccessRefused" in output and user in output
    assert "ConnectionLost" not in output


def test_passive_worker_retries_and_dead_letters_through_the_imported_delay_and_dead_letter_queues(
    vhost: PrivateVhost,
) -> None:
    # Given a service whose event handler fails once and is retried, and one that always fails,
    # imported with its delay queue and dead-letter queue, and a worker user with the worker role only
    registry, runs = Registry(), []

    @registry.subscribe("order.placed", retry=Retry(attempts=2, first_delay=0.2, jitter=False))
    def flaky(data: Any) -> None:
        runs.append(data)
        if len(runs) == 1:
            raise ValueError("first run fails")

    @registry.subscribe("order.broken")
    def broken(data: Any) -> None:
        raise ValueError("always fails")

    document = definitions.document({"orders": registry}, Settings(), vhost.name)
    assert "orders.retry.200ms" in [q["name"] for q in document["queues"]]
    vhost.load(document)
    roles = _roles(document)
    worker_user, worker_url = vhost.user("worker")
    vhost.grant(worker_user, roles["worker"])
    caller_user, caller_url = vhost.user("caller")
    vhost.grant(caller_user, roles["caller"])

    # When events reach it
    with (
        Worker(queue="orders", registry=registry, settings=_settings(worker_url, declare="passive")),
        Client(settings=_settings(caller_url, declare="passive")) as client,
    ):
        client.publish("order.placed", {"id": 1})
        client.publish("order.broken", {"id": 2})

        # Then the failed run is retried through the delay queue, and the broken one is dead-lettered
        assert _wait_for(lambda: len(runs) == 2, 20), runs
        assert _wait_for(lambda: _depth(vhost, "orders.dead") == 1, 20)


def _depth(vhost: PrivateVhost, queue: str) -> int:
    for line in _ctl("list_queues", "-p", vhost.name, "-s", "name", "messages").splitlines():
        name, _, count = line.partition("\t")
        if name == queue:
            return int(count)
    return -1


def test_two_refused_bindings_among_thousands_fail_the_start_naming_the_first_in_order(
    vhost: PrivateVhost,
) -> None:
    # Given 3,000 event patterns, bound on several channels at once, and a user whose topic
    # permissions refuse two of them, on different channels in the same round of batches
    patterns = sorted(f"big.t{i}.*" for i in range(3000))
    first, second = patterns[1300], patterns[2800]
    user, url = vhost.user("binder")
    settings = _settings(url)
    escaped = "|".join(p.replace(".", r"\.").replace("*", r"\*") for p in (first, second))
    refuse = definitions.TopicPermission(settings.events_exchange, ".*", f"^(?!({escaped})$).*")
    vhost.grant(user, definitions.Permission(".*", ".*", ".*", (refuse,)))
    registry = Registry()
    for pattern in patterns:
        registry.add(pattern, print)
    worker = Worker(queue="big", registry=registry, settings=settings)

    # When the worker starts, then it fails at once (no hang) with the first refused pattern named
    with pytest.raises(AccessRefused) as info:
        worker.start(timeout=90)
    message = str(info.value)
    exchange = settings.events_exchange
    assert f"binding queue 'big.events' to exchange {exchange!r} with pattern {first!r}" in message
    assert second not in message
    assert info.value.operation == "Queue.bind"
    assert info.value.user == user
