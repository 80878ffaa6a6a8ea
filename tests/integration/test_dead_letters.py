"""`tchu-rpc dead`: listing a service's dead letters leaves them all, a replay moves each exactly once.

Dead letters are made as in production, by a worker whose handler fails while `failing` is set, or
put in `<service>.dead` the way the worker's copy looks (`_worker.outgoing.copy`) where a test needs
one the handler cannot make (a call, a timestamp). A replay that is SIGKILLed runs in a subprocess
whose move pauses at a chosen letter, before or after its transaction is committed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from kombu import Connection

from tchu_rpc import ConfigError, Registry, RpcError, cli, current_delivery, wire
from tchu_rpc.dead import HEADER_REPLAYED, list_dead_letters, replay_dead_letters
from tchu_rpc.testing import TchuFactory
from tchu_rpc.worker import Worker

_POLL = 0.02  # pause between looks at a queue's depth, which has no event to wait on

#: Runs `tchu-rpc` with `argv[3:]`, pausing for ever at the `argv[1]`-th move of a letter, `argv[2]`
#: ("before" or "after") its commit; prints "paused" when it does.
_PAUSING_CLI = """
import sys, time
from tchu_rpc import cli
from tchu_rpc._dead.queue import DeadQueue

pause_at, when = int(sys.argv[1]), sys.argv[2]
commit, moves = DeadQueue._commit, []

def pause():
    print("paused", flush=True)
    time.sleep(600)

def pausing(self):
    moves.append(1)
    if len(moves) == pause_at and when == "before":
        pause()
    commit(self)
    if len(moves) == pause_at:
        pause()

DeadQueue._commit = pausing
sys.exit(cli.main(sys.argv[3:]))
"""


class Service:
    """A worker's handlers that record what they ran, and fail while `failing` is set."""

    def __init__(self) -> None:
        self.failing = True
        self.handled: list[Any] = []
        self.headers: list[dict[str, Any]] = []
        self.changed = threading.Condition()
        self.registry = Registry()
        self.registry.add("user.*", self._handle, kind="event")
        self.registry.add("order.*", self._handle, kind="event")
        self.registry.add("rpc.svc.do", self._handle, kind="call")

    def _handle(self, data: Any) -> Any:
        if self.failing:
            raise RpcError("boom")  # logged without a traceback
        delivery = current_delivery()
        assert delivery is not None
        with self.changed:
            self.handled.append(data)
            self.headers.append(dict(delivery.headers))
            self.changed.notify_all()
        return "done"

    def wait_for(self, count: int, within: float = 20.0) -> list[Any]:
        """Return what was handled once there are at least `count` of them."""
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.handled) >= count, timeout=within), self.handled
            return list(self.handled)


@pytest.fixture
def service(tchu: TchuFactory) -> Iterator[tuple[Service, Worker, str]]:
    """Yield a failing service, its running worker and its name."""
    handlers = Service()
    worker = tchu.worker(handlers.registry, name="svc")
    yield handlers, worker, worker.service


def _depth(tchu: TchuFactory, queue: str) -> int:
    with Connection(tchu.broker_url, connect_timeout=5) as conn:
        return int(conn.channel().queue_declare(queue, passive=True).message_count)


def _wait_depth(tchu: TchuFactory, queue: str, depth: int, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while (now := _depth(tchu, queue)) != depth:
        assert time.monotonic() < deadline, f"{queue} holds {now} messages, not {depth}"
        time.sleep(_POLL)  # the broker's count: nothing to wait on


def _dead_events(tchu: TchuFactory, name: str, topics: list[str]) -> None:
    """Publish one event per topic, `{"n": i}`, and wait until the failing handler dead-lettered all."""
    client = tchu.client()
    for n, topic in enumerate(topics):
        client.publish(topic, {"n": n})
    _wait_depth(tchu, f"{name}.dead", len(topics))


def _put_dead(tchu: TchuFactory, name: str, body: Any, headers: dict[str, Any], **properties: Any) -> None:
    """Put a letter in `<name>.dead` as a worker's copy looks: by the default exchange, JSON."""
    with Connection(tchu.broker_url, connect_timeout=5) as conn:
        conn.Producer().publish(
            json.dumps(body).encode(),
            exchange="",
            routing_key=f"{name}.dead",
            headers=headers,
            content_type=wire.JSON,
            content_encoding="utf-8",
            delivery_mode=2,
            **{"app_id": wire.COPY_APP_ID, **properties},
        )


def _env(tchu: TchuFactory) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TCHU_RPC_")}
    env.update(
        TCHU_RPC_EVENTS_EXCHANGE=tchu.settings.events_exchange,
        TCHU_RPC_CALLS_EXCHANGE=tchu.settings.calls_exchange,
        TCHU_RPC_BROKER_URL=tchu.broker_url,
        PYTHONUNBUFFERED="1",
    )
    return env


def _numbers(handled: list[Any]) -> list[int]:
    return [data["n"] for data in handled]


def test_listing_shows_every_letter_and_leaves_them_in_their_order(
    tchu: TchuFactory, service: tuple[Service, Worker, str]
) -> None:
    # Given five events dead-lettered by a failing handler
    handlers, _, name = service
    _dead_events(tchu, name, ["user.created", "order.paid", "user.created", "user.gone", "order.paid"])
    # When they are listed twice, the second time the first three
    listing = list_dead_letters(name, tchu.settings)
    again = list_dead_letters(name, tchu.settings, limit=3)
    # Then each shows its topic, kind and reason, and all five are still there, in their order
    assert (listing.queue, listing.depth, len(listing.letters)) == (f"{name}.dead", 5, 5)
    assert [x.topic for x in listing.letters] == [
        "user.created", "order.paid", "user.created", "user.gone", "order.paid"
    ]  # fmt: skip
    first = listing.letters[0]
    assert (first.kind, first.attempts, first.replays) == ("event", 1, 0)
    assert first.age is not None and 0 <= first.age < 60  # the worker stamps when it dead-letters
    assert first.reason.startswith("handler failed: ") and "RpcError: boom" in first.reason
    ageless = [replace(letter, age=None) for letter in again.letters]  # ages move on between the two
    assert ageless == [replace(letter, age=None) for letter in listing.letters[:3]]
    assert _depth(tchu, f"{name}.dead") == 5
    handlers.failing = False
    assert replay_dead_letters(name, tchu.settings).replayed == 5
    assert _numbers(handlers.wait_for(5)) == [0, 1, 2, 3, 4]


def test_listing_filters_by_topic_and_shows_the_age_and_the_kind(
    tchu: TchuFactory, service: tuple[Service, Worker, str]
) -> None:
    # Given a call's letter dead-lettered two minutes ago, and an event's without a timestamp
    _, _, name = service
    call = {
        wire.HEADER_TOPIC: "rpc.svc.do",
        wire.HEADER_ERROR: "DeliveryLimitExceeded: ...",
        wire.HEADER_TIMEOUT: 5,
    }
    _put_dead(tchu, name, 1, {**call, wire.HEADER_DELIVERIES: 5}, timestamp=int(time.time()) - 120)
    _put_dead(tchu, name, 2, {wire.HEADER_TOPIC: "user.created", wire.HEADER_ERROR: "DecodeError: x"})
    # When only the calls are listed
    (letter,) = list_dead_letters(name, tchu.settings, topic="rpc.#").letters
    # Then it shows as a call, delivered six times, about two minutes old
    assert (letter.topic, letter.kind, letter.attempts) == ("rpc.svc.do", "call", 6)
    assert letter.age is not None and 119 <= letter.age < 150
    assert _depth(tchu, f"{name}.dead") == 2


def test_a_workers_letters_say_their_kind_and_the_listing_goes_by_it(
    tchu: TchuFactory, service: tuple[Service, Worker, str]
) -> None:
    # Given an event the worker dead-lettered, and a letter saying it was a call on a topic that
    # the naming convention (`rpc.` first) would take for an event's
    _, _, name = service
    _dead_events(tchu, name, ["user.created"])
    _put_dead(
        tchu, name, 2, {wire.HEADER_TOPIC: "order.placed", wire.HEADER_ERROR: "x", wire.HEADER_KIND: "call"}
    )
    # When the letters are listed
    letters = list_dead_letters(name, tchu.settings).letters
    # Then each shows the kind its letter says
    assert {letter.topic: letter.kind for letter in letters} == {
        "user.created": "event",
        "order.placed": "call",
    }
    # And the worker's copy says it in `x-tchu-kind`
    with Connection(tchu.broker_url, connect_timeout=5) as conn:
        channel = conn.channel()
        taken = [channel.basic_get(f"{name}.dead", no_ack=True) for _ in range(2)]
    said = {m.headers[wire.HEADER_TOPIC]: m.headers.get(wire.HEADER_KIND) for m in taken if m is not None}
    assert said == {"user.created": "event", "order.placed": "call"}


def test_100_replayed_dead_letters_are_handled_once_each(
    tchu: TchuFactory, service: tuple[Service, Worker, str]
) -> None:
    # Given 100 events dead-lettered by a failing handler, which is then fixed
    handlers, worker, name = service
    _dead_events(tchu, name, ["user.created"] * 100)
    handlers.failing = False
    # When `tchu-rpc dead --replay` replays them
    done = subprocess.run(
        [sys.executable, "-m", "tchu_rpc", "dead", name, "--replay", "--json"],
        env=_env(tchu),
        capture_output=True,
        timeout=60,
        check=True,
    )
    # Then each was handled exactly once, marked as replayed, and the dead-letter queue is empty
    assert json.loads(done.stdout) == {
        "queue": f"{name}.dead",
        "replayed": 100,
        "remaining": 0,
        "skipped": {},
    }
    assert sorted(_numbers(handlers.wait_for(100))) == list(range(100))
    worker.stop(timeout=10)
    assert len(handlers.handled) == 100
    assert {h[HEADER_REPLAYED] for h in handlers.headers} == {1}
    assert _depth(tchu, f"{name}.events") == _depth(tchu, f"{name}.dead") == 0


@pytest.mark.parametrize("when", ["before", "after"])
def test_replay_killed_mid_way_loses_no_letter_and_doubles_none(
    tchu: TchuFactory, service: tuple[Service, Worker, str], when: str
) -> None:
    # Given 100 dead letters whose handler now succeeds
    handlers, worker, name = service
    _dead_events(tchu, name, ["user.created"] * 100)
    handlers.failing = False
    # When a replay is SIGKILLed at its 40th letter, published and acked, before (or after) the commit
    with subprocess.Popen(
        [sys.executable, "-c", _PAUSING_CLI, "40", when, "dead", name, "--replay"],
        env=_env(tchu),
        stdout=subprocess.PIPE,
        start_new_session=True,
    ) as replay:
        try:
            assert replay.stdout is not None and replay.stdout.readline() == b"paused\n"
            moved = 40 if when == "after" else 39
            assert len(handlers.wait_for(moved)) == moved
            os.kill(replay.pid, signal.SIGKILL)
        finally:
            replay.kill()
            replay.wait(10)
    # Then every letter not committed is back in the dead-letter queue, none twice
    _wait_depth(tchu, f"{name}.dead", 100 - moved)
    # And a second replay moves the rest: each of the 100 is handled exactly once
    assert replay_dead_letters(name, tchu.settings).replayed == 100 - moved
    assert sorted(_numbers(handlers.wait_for(100))) == list(range(100))
    worker.stop(timeout=10)
    assert len(handlers.handled) == 100
    assert _depth(tchu, f"{name}.events") == _depth(tchu, f"{name}.dead") == 0


def test_replay_moves_only_letters_matching_the_topic_up_to_the_limit(
    tchu: TchuFactory, service: tuple[Service, Worker, str]
) -> None:
    # Given user and order events dead-lettered in turn
    handlers, _, name = service
    _dead_events(tchu, name, ["user.created", "order.paid"] * 3)
    handlers.failing = False
    # When two orders are replayed
    done = replay_dead_letters(name, tchu.settings, topic="order.*", limit=2)
    # Then the first two orders are handled, and the others are left in their order
    assert (done.replayed, done.remaining, done.skipped) == (2, 4, {"topic": 2})
    assert _numbers(handlers.wait_for(2)) == [1, 3]
    left = list_dead_letters(name, tchu.settings).letters
    expected = ["user.created", "user.created", "user.created", "order.paid"]
    assert [x.topic for x in left] == expected


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_listing_and_replay_fail_over_past_a_dead_first_url(
    tchu: TchuFactory, service: tuple[Service, Worker, str]
) -> None:
    # Given two dead letters, and a failover list whose first node refuses connections
    handlers, _, name = service
    _dead_events(tchu, name, ["user.created", "order.paid"])
    dead_first = f"amqp://guest:guest@127.0.0.1:{_closed_port()}//"
    settings = tchu.settings.replace(broker_url=f"{dead_first};{tchu.broker_url}", connect_timeout=1.0)
    # When they are listed and replayed with that list
    listing = list_dead_letters(name, settings)
    handlers.failing = False
    done = replay_dead_letters(name, settings)
    # Then both went to the next node: both letters were seen, moved and handled
    assert (listing.depth, [x.topic for x in listing.letters]) == (2, ["user.created", "order.paid"])
    assert (done.replayed, done.remaining) == (2, 0)
    assert _numbers(handlers.wait_for(2)) == [0, 1]


def test_a_letter_that_fails_again_comes_back_once_per_replay(
    tchu: TchuFactory, service: tuple[Service, Worker, str]
) -> None:
    # Given three dead letters whose handler still fails
    _, _, name = service
    _dead_events(tchu, name, ["user.created"] * 3)
    # When they are replayed
    done = replay_dead_letters(name, tchu.settings)
    # Then each was moved once (not again when it came back during the replay), and is dead again
    assert done.replayed == 3
    _wait_depth(tchu, f"{name}.dead", 3)
    letters = list_dead_letters(name, tchu.settings).letters
    assert [(x.replays, x.attempts) for x in letters] == [(1, 1)] * 3


def test_calls_are_replayed_only_when_asked_and_then_run_once(
    tchu: TchuFactory, service: tuple[Service, Worker, str], reply_to_of_a_gone_caller: str
) -> None:
    # Given a call dead-lettered after its delivery limit, whose caller has gone
    handlers, worker, name = service
    handlers.failing = False
    headers = {
        wire.HEADER_TOPIC: "rpc.svc.do",
        wire.HEADER_ERROR: "DeliveryLimitExceeded: delivered 5 times",
        wire.HEADER_DELIVERIES: 5,
        wire.HEADER_TIMEOUT: 0.001,
    }
    _put_dead(tchu, name, {"n": 7}, headers, reply_to=reply_to_of_a_gone_caller, correlation_id="c1")
    # When the dead letters are replayed without --calls
    skipped = replay_dead_letters(name, tchu.settings)
    # Then the call stays
    assert (skipped.replayed, skipped.remaining, skipped.skipped) == (0, 1, {"call": 1})
    # When they are replayed with --calls
    done = replay_dead_letters(name, tchu.settings, calls=True)
    # Then it runs once, though its count and time had run out, and the worker is not disturbed
    assert (done.replayed, done.remaining) == (1, 0)
    assert handlers.wait_for(1) == [{"n": 7}]
    assert wire.HEADER_TIMEOUT not in handlers.headers[0]
    with tchu.client() as client:
        assert client.call("rpc.svc.do", {"n": 8}, timeout=10) == "done"
    worker.stop(timeout=10)
    assert _depth(tchu, f"{name}.dead") == 0


@pytest.fixture
def reply_to_of_a_gone_caller(tchu: TchuFactory) -> str:
    """Return a direct reply-to address whose channel is closed, as a dead call's caller left it."""
    with Connection(tchu.broker_url, connect_timeout=5) as conn:
        probe = tchu.service("probe")
        channel = conn.channel()
        channel.queue_declare(probe, auto_delete=True)
        channel.basic_consume("amq.rabbitmq.reply-to", no_ack=True, callback=lambda message: None)
        conn.Producer(channel).publish(b"", exchange="", routing_key=probe, reply_to="amq.rabbitmq.reply-to")
        message = conn.channel().basic_get(probe, no_ack=True)
        assert message is not None
        reply_to: str = message.properties["reply_to"]
    assert reply_to.startswith("amq.rabbitmq.reply-to.")
    return reply_to


def test_a_service_without_a_dead_letter_queue_is_a_config_error(tchu: TchuFactory) -> None:
    with pytest.raises(ConfigError, match=r"has no dead-letter queue 't\w+\.nobody\.dead'"):
        list_dead_letters(tchu.service("nobody"), tchu.settings)


def test_the_command_prints_the_table_and_exits_1_on_an_unknown_service(
    tchu: TchuFactory,
    service: tuple[Service, Worker, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, _, name = service
    _dead_events(tchu, name, ["user.created"])
    monkeypatch.setattr(cli, "configure", lambda level="info", json=False: None)
    for key, value in _env(tchu).items():
        if key.startswith("TCHU_RPC_"):
            monkeypatch.setenv(key, value)
    capsys.readouterr()  # the worker's logs so far
    assert cli.main(["dead", name]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{name}.dead: 1 in the queue, 1 shown"
    assert out[1].split() == ["TOPIC", "KIND", "ATTEMPTS", "REPLAYS", "AGE", "REASON"]
    assert out[2].split()[:4] == ["user.created", "event", "1", "0"]
    assert out[2].split()[4].endswith("s"), out[2]  # its age, from the worker's stamp
    assert cli.main(["dead", tchu.service("nobody")]) == 1
    assert "ConfigError: service" in capsys.readouterr().err


def _quorum_letters(tchu: TchuFactory, arguments: dict[str, Any], count: int) -> tuple[str, list[Any]]:
    """Declare `<service>.dead` as a quorum queue with `arguments`, put `count` letters in it.

    Returns the service's name and what each letter holds (body, headers, message id, timestamp).
    """
    name = tchu.service("quorum")
    with Connection(tchu.broker_url, connect_timeout=5) as conn:
        conn.channel().queue_declare(
            f"{name}.dead", durable=True, auto_delete=False, arguments={"x-queue-type": "quorum", **arguments}
        )
    letters = []
    for n in range(count):
        headers = {wire.HEADER_TOPIC: "user.created", wire.HEADER_ERROR: f"boom {n}", "app": [n, "a"]}
        _put_dead(tchu, name, {"n": n}, headers, message_id=f"m{n}", timestamp=1_700_000_000 + n)
        letters.append(({"n": n}, headers, f"m{n}", 1_700_000_000 + n))
    return name, letters


def _take_all(tchu: TchuFactory, queue: str) -> tuple[list[Any], set[int]]:
    """Take every message of `queue`: (body, headers, message id, timestamp) of each, in order.

    And the broker's delivery counts (`x-delivery-count`, 0 on a first delivery from a quorum queue).
    """
    taken, counts = [], set()
    with Connection(tchu.broker_url, connect_timeout=5) as conn:
        channel = conn.channel()
        while (message := channel.basic_get(queue, no_ack=True)) is not None:
            props = message.properties
            timestamp = props["timestamp"]
            timestamp = timestamp if isinstance(timestamp, int) else int(timestamp.timestamp())
            headers = dict(props["application_headers"])
            counts.add(headers.pop("x-delivery-count", 0))
            taken.append((json.loads(message.body), headers, props["message_id"], timestamp))
    return taken, counts


@pytest.mark.parametrize(
    "arguments", [{}, {"x-delivery-limit": 5}], ids=["default-limit", "delivery-limit-5"]
)
def test_listing_a_quorum_dead_letter_queue_returns_no_letter_to_it(
    tchu: TchuFactory, arguments: dict[str, Any]
) -> None:
    # Given three letters in a quorum dead-letter queue (which counts every letter it gets back as a
    # delivery: RabbitMQ 4.0 drops a letter after 20 by default, and here after 5 with a limit)
    name, letters = _quorum_letters(tchu, arguments, 3)
    # When they are listed 25 times, and a replay that selects none of them runs 5 times
    for _ in range(25):
        listing = list_dead_letters(name, tchu.settings, limit=2)
        assert [x.reason for x in listing.letters] == ["boom 0", "boom 1"]
    for _ in range(5):
        assert replay_dead_letters(name, tchu.settings, topic="order.#").replayed == 0
    # Then every letter is still there, in its order, as it was: no delivery was counted
    assert _take_all(tchu, f"{name}.dead") == (letters, {0})


def test_listing_sends_no_copy_where_a_letters_cc_header_points(tchu: TchuFactory) -> None:
    # Given a letter whose headers name another queue in `CC` (RabbitMQ routes a message there too)
    name = tchu.service("cc")
    with Connection(tchu.broker_url, connect_timeout=5) as conn:
        for suffix in ("dead", "events"):
            conn.channel().queue_declare(f"{name}.{suffix}", durable=True, auto_delete=False)
    headers = {wire.HEADER_TOPIC: "user.created", wire.HEADER_ERROR: "boom", "CC": [f"{name}.events"]}
    _put_dead(tchu, name, 1, headers)
    assert _depth(tchu, f"{name}.events") == 1  # the broker did route the original there
    with Connection(tchu.broker_url, connect_timeout=5) as conn:
        conn.channel().queue_purge(f"{name}.events")
    # When the letters are listed, and a replay that selects none of them runs
    assert len(list_dead_letters(name, tchu.settings).letters) == 1
    assert replay_dead_letters(name, tchu.settings, topic="order.#").replayed == 0
    # Then the letter is kept, and nothing reached the queue its header names
    assert _depth(tchu, f"{name}.dead") == 1
    assert _depth(tchu, f"{name}.events") == 0
