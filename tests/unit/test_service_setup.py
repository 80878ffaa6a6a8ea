"""A worker's set-up on a new connection: pipelined bindings, its progress, and how `start()` waits for it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from amqp import exceptions as amqp_errors
from kombu import Connection, Exchange, Producer, Queue

from tchu_rpc import topology
from tchu_rpc._worker import bindings
from tchu_rpc._worker.consumers import SetupProgress, declare_service
from tchu_rpc.config import Settings
from tchu_rpc.errors import AccessRefused, ConfigError, ConnectionLost
from tchu_rpc.registry import Registry
from tchu_rpc.testing import capture_logs

SETTINGS = Settings(events_exchange="ev_x", calls_exchange="rpc_x")


class RecordingChannel:
    """A py-amqp channel that records the methods sent on it; `refuse` makes the barrier raise."""

    def __init__(self, refuse: BaseException | None = None) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.refuse = refuse

    def prepare_queue_arguments(self, arguments: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return arguments

    def exchange_declare(self, **kwargs: Any) -> None:
        self.sent.append(("exchange_declare", kwargs))

    def queue_declare(self, **kwargs: Any) -> tuple[str, int, int]:
        self.sent.append(("queue_declare", kwargs))
        if kwargs.get("passive") and self.refuse is not None:
            raise self.refuse
        return kwargs["queue"], 0, 0

    def queue_bind(self, **kwargs: Any) -> None:
        self.sent.append(("queue_bind", kwargs))

    def close(self) -> None:
        self.sent.append(("close", {}))

    def names(self) -> list[str]:
        return [name for name, _ in self.sent]


class AmqpConnection:
    """Just enough of a kombu connection on py-amqp for `declare_service`."""

    class transport:  # kombu's attribute
        driver_type = "amqp"

    def __init__(self, channel: RecordingChannel) -> None:
        self._channel = channel

    def channel(self) -> RecordingChannel:
        return self._channel


def registry_of(events: int, calls: int = 0) -> Registry:
    registry = Registry()
    for i in range(events):
        registry.add(f"ev.t{i}.*", print)
    for i in range(calls):
        registry.add(f"rpc.c{i}", print)
    return registry


def never_stopping() -> bool:
    return False


@pytest.fixture
def info_logs() -> Iterator[list[Any]]:
    """Capture logs down to info."""
    with capture_logs() as logs:
        yield logs


def test_bindings_are_sent_without_waiting_and_confirmed_by_one_synchronous_method_per_batch() -> None:
    # Given a service with 1,200 event patterns and 2 call patterns on a (recorded) AMQP connection
    channel = RecordingChannel()
    progress = SetupProgress(never_stopping)

    # When its set-up declares it
    declare_service(AmqpConnection(channel), "svc", SETTINGS, registry_of(1200, 2), progress)

    # Then each exchange is declared (durable topic, no arguments) before the binds to it
    declares = [kw for name, kw in channel.sent if name == "exchange_declare"]
    assert [(d["exchange"], d["type"], d["durable"], d["arguments"]) for d in declares] == [
        ("rpc_x", "topic", True, None),
        ("ev_x", "topic", True, None),
    ]
    declared: set[str] = set()
    binds = []
    for name, kw in channel.sent:
        if name == "exchange_declare":
            declared.add(kw["exchange"])
        elif name == "queue_bind":
            assert kw["exchange"] in declared
            binds.append(kw)
    # And every pattern is bound without waiting for the broker's answer
    assert len(binds) == 1202
    assert all(bind["nowait"] for bind in binds)
    # And one passive queue.declare closes every batch of up to 500 binds: the calls' 2 binds on one
    # channel; the events' 1,200 on two channels of 600 each, in two rounds of a batch per channel
    barriers = [kw["queue"] for name, kw in channel.sent if name == "queue_declare" and kw.get("passive")]
    assert barriers == ["svc.calls", "svc.events", "svc.events", "svc.events", "svc.events"]
    # And both lanes' first batches are all sent before the first barrier: the broker makes them at once
    first_barrier = next(i for i, (name, kw) in enumerate(channel.sent) if kw.get("passive"))
    assert channel.names()[:first_barrier].count("queue_bind") == 2 + 500 + 500
    assert channel.names()[-1] == "close"
    assert progress.declared == progress.total == 1202


def test_the_dead_letter_queue_is_declared_before_any_lane_consumes() -> None:
    channel = RecordingChannel()
    declare_service(AmqpConnection(channel), "svc", SETTINGS, registry_of(3), SetupProgress(never_stopping))
    queues = [kw["queue"] for name, kw in channel.sent if name == "queue_declare" and not kw.get("passive")]
    assert queues == ["svc.events", "svc.dead"]


def test_a_second_set_up_binds_every_pattern_again_and_unbinds_nothing() -> None:
    # Given a service set up once
    channel = RecordingChannel()
    registry = registry_of(10, 1)
    declare_service(AmqpConnection(channel), "svc", SETTINGS, registry, SetupProgress(never_stopping))
    first = list(channel.sent)

    # When it is set up again (a reconnection)
    declare_service(AmqpConnection(channel), "svc", SETTINGS, registry, SetupProgress(never_stopping))

    # Then the same methods are sent again, and nothing is unbound
    assert channel.sent == first + first
    assert "queue_unbind" not in channel.names()


def test_a_bind_the_broker_refused_surfaces_at_the_batch_barrier() -> None:
    # Given a broker that closed the channel over a bind (the passive declare after it raises)
    refused = OSError("NOT_FOUND - no exchange")
    channel = RecordingChannel(refuse=refused)
    progress = SetupProgress(never_stopping)

    # When the service is set up, then that error is raised, and nothing counted as declared
    with pytest.raises(OSError) as info:
        declare_service(AmqpConnection(channel), "svc", SETTINGS, registry_of(5), progress)
    assert info.value is refused
    assert progress.declared == 0


def test_progress_is_logged_every_two_thousand_bindings_and_at_the_end(info_logs: list[Any]) -> None:
    channel = RecordingChannel()
    declare_service(
        AmqpConnection(channel), "svc", SETTINGS, registry_of(5000), SetupProgress(never_stopping)
    )
    logged = [e for e in info_logs if e["event"] == "bindings_declared"]
    assert [(e["queue"], e["declared"], e["total"]) for e in logged] == [
        ("svc.events", 2000, 5000),
        ("svc.events", 4000, 5000),
        ("svc.events", 5000, 5000),
    ]
    assert all(e["service"] == "svc" and e["duration_ms"] >= 0 for e in logged)


def test_a_set_up_ends_at_the_next_batch_once_the_worker_is_stopping() -> None:
    stopping = threading.Event()
    progress = SetupProgress(stopping.is_set)
    progress.begin(1000)
    progress.advance(500)
    stopping.set()
    with pytest.raises(ConnectionLost, match="stopping"):
        progress.advance(500)
    assert progress.declared == 500


def test_on_kombus_memory_transport_the_queues_are_declared_and_bound_by_kombu() -> None:
    # Given a service declared on memory://
    with Connection("memory://") as conn:
        progress = SetupProgress(never_stopping)
        declare_service(conn, "memsvc", SETTINGS, registry_of(3, 1), progress)

        # When an event is published to one of its patterns
        channel = conn.channel()
        Producer(channel).publish({"n": 1}, exchange=Exchange("ev_x", "topic"), routing_key="ev.t2.created")

        # Then its event queue holds it
        message = Queue("memsvc.events")(channel).get(no_ack=True)
        assert message is not None
        assert message.payload == {"n": 1}
        assert progress.declared == progress.total == 4


def test_start_wait_returns_none_once_done() -> None:
    done = threading.Event()
    done.set()
    assert SetupProgress(never_stopping).wait_for(done, 0.05, renewed=True) is None


def test_start_wait_without_progress_fails_after_the_wait_and_says_how_far_set_up_came() -> None:
    progress = SetupProgress(never_stopping)
    progress.begin(10_002)
    error = progress.wait_for(threading.Event(), 0.05, renewed=True)
    assert isinstance(error, ConnectionLost)
    assert "not consuming after" in str(error)
    assert "0 of 10,002 bindings declared" in str(error)


def test_start_wait_is_renewed_while_bindings_progress() -> None:
    # Given a set-up that confirms a batch every 0.05 s for 0.4 s, with a 0.15 s wait
    progress = SetupProgress(never_stopping)
    progress.begin(8)
    done = threading.Event()

    def set_up() -> None:
        for _ in range(8):
            time.sleep(0.05)  # the broker's time for a batch
            progress.advance(1)
        done.set()

    threading.Thread(target=set_up, daemon=True).start()

    # When start waits with progress renewing the wait, then it sees the set-up finish
    assert progress.wait_for(done, 0.15, renewed=True) is None


def test_an_explicit_timeout_bounds_the_whole_start_even_while_bindings_progress() -> None:
    # Given a set-up that keeps progressing and never finishes
    progress = SetupProgress(never_stopping)
    progress.begin(1_000_000)
    stop = threading.Event()

    def set_up() -> None:
        while not stop.wait(0.01):
            progress.advance(1)

    threading.Thread(target=set_up, daemon=True).start()
    try:
        # When start waits with an explicit timeout, then it gives up once that has passed
        began = time.monotonic()
        error = progress.wait(threading.Event(), 0.2, SETTINGS)
        assert time.monotonic() - began < 2.0
    finally:
        stop.set()
    assert isinstance(error, ConnectionLost)
    assert "bindings declared" in str(error)


def test_a_lane_queue_is_the_call_or_the_event_queue_of_the_service() -> None:
    registry = Registry()
    registry.subscribe("rpc.a")(lambda data: data)
    registry.subscribe("a.*")(lambda data: None)
    calls = topology.lane_queue("call", "svc", SETTINGS, registry)
    events = topology.lane_queue("event", "svc", SETTINGS, registry)
    assert (calls.name, events.name) == ("svc.calls", "svc.events")
    assert [(b.exchange.name, b.routing_key) for b in calls.bindings] == [("rpc_x", "rpc.a")]
    assert [(b.exchange.name, b.routing_key) for b in events.bindings] == [("ev_x", "a.*")]


def test_accepting_tchu_tchu_binds_a_topic_of_both_kinds_on_the_events_exchange_once() -> None:
    # Given a topic with a call and an event handler (compat's exact topics), and an rpc. topic
    registry = Registry()
    registry.subscribe("order.total", kind="call")(lambda data: data)
    registry.subscribe("order.total", kind="event")(lambda data: None)
    registry.subscribe("rpc.a")(lambda data: data)
    settings = SETTINGS.replace(accept_tchu_tchu=True)
    # When the queues are built, then only the event queue takes the exact topic from the events
    # exchange (a second copy on the call queue would run its handlers twice)
    calls = topology.lane_queue("call", "svc", settings, registry)
    events = topology.lane_queue("event", "svc", settings, registry)
    keys = {(b.exchange.name, b.routing_key) for b in calls.bindings}
    assert keys == {("rpc_x", "order.total"), ("rpc_x", "rpc.a"), ("ev_x", "rpc.a")}
    assert {(b.exchange.name, b.routing_key) for b in events.bindings} == {("ev_x", "order.total")}


def test_a_refused_bind_is_named_with_its_queue_exchange_and_pattern_as_a_typed_error() -> None:
    # Given the broker's refusals of one bind: a 404 and a 403
    not_found = amqp_errors.NotFound("NOT_FOUND - no exchange 'ev_x' in vhost '/'", (50, 20))
    denied = amqp_errors.AccessRefused("ACCESS_REFUSED - access to topic 'a.*' refused", (50, 20))

    # When they are told as the worker's set-up tells them
    config = bindings._refusal(not_found, "svc.events", "ev_x", "a.*", "ada")
    access = bindings._refusal(denied, "svc.events", "ev_x", "a.*", "ada")

    # Then each names the binding, and a 403 is `AccessRefused` with the operation and the user
    what = "binding queue 'svc.events' to exchange 'ev_x' with pattern 'a.*'"
    assert isinstance(config, ConfigError)
    assert str(config) == f"the broker refused {what}: NOT_FOUND - no exchange 'ev_x' in vhost '/'"
    assert isinstance(access, AccessRefused)
    assert (access.operation, access.user) == ("Queue.bind", "ada")
    assert what in str(access)


@pytest.mark.parametrize("count", [0, 1, 499, 500, 4_001, 20_000])
def test_a_queues_bindings_are_split_into_contiguous_slices_whatever_their_number(count: int) -> None:
    # A queue with no binding at all (the events queue when a legacy queue takes its patterns) too.
    keys = [("tchu_events", f"t{i}") for i in range(count)]
    slices = bindings._slices(keys)
    assert [key for part in slices for key in part] == keys
    assert len(slices) <= bindings._CHANNELS_PER_QUEUE
