"""The `topics` scenario (issue 12, item 4): a service with 10,000 topics, tchu_rpc alone, AMQP only.

- registration: 10,000 event handlers and 10 call handlers added to a new `Registry`;
- start: `Worker.start()` in this process with those 10,010 patterns, on new queues (the broker
  creates every binding) and again on the same queues (a restart or reconnection: the bindings
  exist); beside it, the broker alone: the same bindings sent pipelined by py-amqp on one channel to
  new queues, with no worker around them; then a first start with 10,000 call topics and 10,000
  event patterns (issue 21, item 6);
- matching: p50 of an uncached `Registry.match` among 10 and among 10,000 wildcard patterns;
- events: confirmed events delivered per second to a `tchu-rpc worker` process with 10 patterns and
  with 10,000 (`benchmarks.topics_handlers`), the events going to a topic one pattern matches.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from kombu import Connection

from benchmarks.progress import Progress
from benchmarks.tchu_rpc_contender import CALL_TIMEOUT, TchuRpcContender
from tchu_rpc import Client, Registry, Worker
from tchu_rpc.registry import Kind

MANY = 10_000
FEW = 10
CALL_PATTERNS = 10
MATCH_SAMPLES = 20_000
PUBLISHERS = 8
ROUNDS = 5  # event rounds per pattern count, taking turns; the median is reported
HANDLERS = "benchmarks.topics_handlers"
_START_TIMEOUT = 300.0  # seconds: a bound for the measurement, not a target
_DELIVERY_WAIT = 120.0


@dataclass(frozen=True)
class TopicsRun:
    """The `topics` scenario's figures (seconds, microseconds, events per second)."""

    patterns: int
    registration_s: float
    first_start_s: float  # new queues: the broker creates every binding
    restart_s: float  # the same queues again: the bindings exist
    broker_bind_s: float  # the broker alone: the bindings pipelined on one channel, new queues
    first_start_both_s: float  # new queues, 10,000 call topics and 10,000 event patterns
    match_p50_us_few: float
    match_p50_us_many: float
    events: int
    publishers: int
    delivered_per_s_few: float
    delivered_per_s_many: float
    confirmed_per_s_few: float
    confirmed_per_s_many: float

    @property
    def match_ratio(self) -> float:
        """Uncached match p50 with `patterns` patterns / with 10."""
        return self.match_p50_us_many / self.match_p50_us_few

    @property
    def events_ratio(self) -> float:
        """Events delivered per second with `patterns` patterns / with 10."""
        return self.delivered_per_s_many / self.delivered_per_s_few


def run_topics(contender: TchuRpcContender, broker_url: str, events: int, progress: Progress) -> TopicsRun:
    """Measure registration, start, matching and event rate with 10 and with 10,000 patterns."""
    progress.stage("topics: registration and start")
    registration_s, registry = _register(MANY)
    first_start_s, restart_s = _start_twice(contender, broker_url, registry)
    broker_bind_s = _broker_binds(broker_url, contender.service, registry)
    both_s = first_start_both(contender, broker_url)
    progress.echo(
        f"  topics: register {MANY} handlers {registration_s:.2f} s, start {first_start_s:.2f} s "
        f"(broker alone {broker_bind_s:.2f} s), restart {restart_s:.2f} s; "
        f"{MANY} calls and {MANY} events: first start {both_s:.2f} s"
    )
    progress.stage("topics: matching")
    few_us, many_us = _match_p50_us(FEW), _match_p50_us(MANY)
    progress.echo(f"  topics: uncached match p50 {few_us:.2f} us with {FEW}, {many_us:.2f} us with {MANY}")
    progress.stage("topics: events")
    rates = _event_rates(contender, broker_url, events, progress)
    for count, (delivered, confirmed) in rates.items():
        progress.echo(
            f"  topics: {count} patterns: {delivered:.0f} events/s delivered, {confirmed:.0f} confirmed/s"
        )
    return TopicsRun(
        patterns=MANY,
        registration_s=registration_s,
        first_start_s=first_start_s,
        restart_s=restart_s,
        broker_bind_s=broker_bind_s,
        first_start_both_s=both_s,
        match_p50_us_few=few_us,
        match_p50_us_many=many_us,
        events=events,
        publishers=PUBLISHERS,
        delivered_per_s_few=rates[FEW][0],
        delivered_per_s_many=rates[MANY][0],
        confirmed_per_s_few=rates[FEW][1],
        confirmed_per_s_many=rates[MANY][1],
    )


def pattern(i: int) -> str:
    """Return the `i`-th wildcard event pattern (the same as `benchmarks.topics_handlers`)."""
    return f"bench.t{i}.*"


def _ignore(data: object) -> None:
    """Handle nothing: registration and start are measured, not handling."""


def _register(count: int, calls: int = CALL_PATTERNS) -> tuple[float, Registry]:
    began = time.perf_counter()
    registry = Registry()
    for i in range(count):
        registry.add(pattern(i), _ignore)
    for i in range(calls):
        registry.add(f"rpc.bench.topics{i}", _ignore)
    return time.perf_counter() - began, registry


def first_start_both(contender: TchuRpcContender, broker_url: str) -> float:
    """Return how long `Worker.start()` takes on new queues with 10,000 call topics and 10,000 events."""
    _, registry = _register(MANY, calls=MANY)
    return _start_twice(contender, broker_url, registry, starts=1)[0]


def _start_twice(
    contender: TchuRpcContender, broker_url: str, registry: Registry, starts: int = 2
) -> list[float]:
    """Return how long `Worker.start()` takes on new queues, and again on the same queues."""
    service = f"{contender.service}.topics"
    settings = contender.settings_for(broker_url)
    took = []
    try:
        for _ in range(starts):
            worker = Worker(queue=service, registry=registry, settings=settings)
            began = time.perf_counter()
            worker.start(timeout=_START_TIMEOUT)
            took.append(time.perf_counter() - began)
            worker.stop(timeout=5)
    finally:
        queues = [f"{service}.{lane}" for lane in ("calls", "events", "dead")]
        _delete(broker_url, queues, [settings.calls_exchange, settings.events_exchange])
    return took


def _broker_binds(broker_url: str, service: str, registry: Registry) -> float:
    """Return how long the broker takes to make the registry's bindings on new queues, pipelined."""
    names: dict[Kind, str] = {"call": f"{service}.floor.calls", "event": f"{service}.floor.events"}
    exchanges = {kind: f"{service}.floor.{kind}s" for kind in names}
    with Connection(broker_url, connect_timeout=5) as conn:
        channel = conn.channel()
        try:
            began = time.perf_counter()
            for kind, queue in names.items():
                channel.exchange_declare(exchanges[kind], "topic", durable=True, auto_delete=False)
                channel.queue_declare(queue, durable=True, auto_delete=False)
                for key in registry.patterns(kind):
                    channel.queue_bind(queue, exchanges[kind], key, nowait=True)
                channel.queue_declare(queue, passive=True)  # answered once every bind was applied
            return time.perf_counter() - began
        finally:
            _delete(broker_url, list(names.values()), list(exchanges.values()))


def _match_p50_us(count: int) -> float:
    """Return the p50 of `Registry.match` for topics it never saw, among `count` wildcard patterns."""
    registry = Registry()
    for i in range(count):
        # Half `*`, half `#`: both wildcards, as services mix them.
        registry.add(pattern(i) if i % 2 else f"bench.t{i}.#", _ignore, kind="event")
    match = registry.match
    samples = []
    clock = time.perf_counter_ns
    for n in range(MATCH_SAMPLES):
        topic = f"bench.t{n % count}.e{n}"  # a new topic each time: never from the cache
        began = clock()
        match(topic, "event")
        samples.append(clock() - began)
    return statistics.median(samples) / 1000


def _event_rates(
    contender: TchuRpcContender, broker_url: str, events: int, progress: Progress
) -> dict[int, tuple[float, float]]:
    """Return the median events/s delivered and confirmed to a worker process, by its pattern count.

    A worker with 10 patterns and one with 10,000 run side by side, each on exchanges of its own,
    and take turns, so that a drift of the machine's load weighs on both alike.
    """
    sides = {count: contender.sibling(f"topics{count}") for count in (FEW, MANY)}
    try:
        for count, side in sides.items():
            side.start_servers(broker_url, 1, handlers=HANDLERS, env={"TCHU_BENCH_PATTERNS": str(count)})
        with sides[FEW].client(broker_url) as few, sides[MANY].client(broker_url) as many:
            clients = {FEW: few, MANY: many}
            runs: dict[int, list[tuple[float, float]]] = {FEW: [], MANY: []}
            for count, client in clients.items():  # warm-up: connections, channels, queues
                _publish(client, _topic(count), 100)
                _delivered(client, 100, time.time())
            for _ in range(ROUNDS):
                for count, client in clients.items():
                    runs[count].append(_event_round(client, _topic(count), events))
                    progress.advance(events)
    finally:
        for side in sides.values():
            side.stop_servers()
    return {
        count: (statistics.median(d for d, _ in rounds), statistics.median(c for _, c in rounds))
        for count, rounds in runs.items()
    }


def _topic(count: int) -> str:
    """Return the events' topic: matched by one of `count` patterns, as many words from the root."""
    return f"bench.t{count // 2}.created"


def _event_round(client: Client, topic: str, events: int) -> tuple[float, float]:
    """Publish `events` events; return the events/s delivered to the worker and confirmed to the client."""
    began = time.time()
    elapsed = _publish(client, topic, events)
    return events / (_delivered(client, events, began) - began), events / elapsed


def _publish(client: Client, topic: str, events: int) -> float:
    """Publish `events` events from `PUBLISHERS` threads; return the seconds until all were confirmed."""
    shares = [events // PUBLISHERS + (1 if i < events % PUBLISHERS else 0) for i in range(PUBLISHERS)]
    errors: list[BaseException] = []

    def publisher(share: int) -> None:
        try:
            for n in range(share):
                client.publish(topic, {"n": n})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=publisher, args=(share,), daemon=True) for share in shares]
    began = time.perf_counter()
    _run(threads)
    if errors:
        raise RuntimeError(f"topics: {len(errors)} publisher(s) failed; first: {errors[0]!r}")
    return time.perf_counter() - began


def _delivered(client: Client, expected: int, began: float) -> float:
    """Wait until the worker has recorded `expected` events; return when the last arrived (wall clock)."""
    deadline = time.monotonic() + _DELIVERY_WAIT

    def stats(take: bool) -> dict[str, float]:
        return dict(client.call("rpc.bench.topic_stats", {"take": take}, timeout=CALL_TIMEOUT))

    while stats(False)["count"] < expected:
        if time.monotonic() > deadline:
            raise RuntimeError(f"topics: fewer than {expected} events arrived in {_DELIVERY_WAIT:.0f} s")
        time.sleep(0.02)
    last = stats(True)["last"]
    return max(last, began + 1e-9)


def _run(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _delete(broker_url: str, queues: list[str], exchanges: list[str]) -> None:
    with Connection(broker_url, connect_timeout=5) as conn:
        channel = conn.channel()
        for queue in queues:
            channel.queue_delete(queue)
        for exchange in exchanges:
            channel.exchange_delete(exchange)


def main() -> None:
    """Time first starts with 10,000 call topics and 10,000 event patterns (`python -m benchmarks.topics`)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.topics", description=main.__doc__)
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672//")
    parser.add_argument("--starts", type=int, default=3, help="first starts to time, each on new queues")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as logs:
        for n in range(args.starts):
            contender = TchuRpcContender(uuid.uuid4().hex[:10], Path(logs))
            took = first_start_both(contender, args.broker)
            print(f"first start {n + 1}: {MANY} call topics, {MANY} event patterns, new queues: {took:.2f} s")


if __name__ == "__main__":
    main()
