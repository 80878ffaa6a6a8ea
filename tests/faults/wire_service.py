"""A service under hostile publishers: its worker behind a rewriting proxy, a raw publisher, the checks.

`WireService` starts a worker whose handlers match every topic (`#`, for calls and events: any
message that arrives has a handler, so each arrival ends in a handler run or a dead letter) through
a `FaultProxy` that swaps in what the broker refuses at publish (`wire_fuzz`). It publishes `Built`
messages byte by byte, waits until each arrival is settled, and checks that each was settled once.
"""

from __future__ import annotations

import struct
import time
import uuid
from collections import Counter
from typing import Any

import msgspec
from conftest import parse_broker_url
from proxy import FaultProxy
from wire_frames import RawPublisher, connect, take_all
from wire_fuzz import CALL_TOPIC, ID, WORKER_LETTER, Built, Names

from tchu_rpc import Client, Registry, Retry, Worker, topology
from tchu_rpc._worker import retries
from tchu_rpc.testing import TchuFactory

SETTLE_WITHIN = 20.0
STILL_FOR = 0.5  # seconds the queues must stay unchanged once every message is settled
#: Labels of the values that break a worker's reading of a message (see `wire_fuzz`).
HOSTILE = ("T:", "-deep", "U", "unknown", "nan", "inf", "longer", "CC:string")


class Payload(msgspec.Struct, frozen=True):
    n: int
    id: str = ""


def registry(runs: list[str]) -> Registry:
    """Return handlers for every call and event topic that note the id of each run in `runs`."""
    registry = Registry()

    @registry.subscribe("#", kind="call")
    def echo(data: Payload) -> int:
        runs.append(data.id)
        return data.n

    @registry.subscribe("#", kind="event")
    def happened(data: Payload) -> None:
        runs.append(data.id)

    @registry.subscribe("wire.never.sent", retry=Retry(attempts=2, first_delay=0.05, jitter=False))
    def retried(data: Payload) -> None:  # only for its delay queue, which CC may name
        raise AssertionError("never sent")

    return registry


class WireService:
    """A worker through `proxy`, a caller, another service's queue and a raw publisher (see the module)."""

    def __init__(
        self, tchu: TchuFactory, proxy: FaultProxy, logs: list[dict[str, Any]], fast_path: bool
    ) -> None:
        self.tchu, self.logs = tchu, logs
        self.target = parse_broker_url(tchu.broker_url)
        self.runs: list[str] = []
        self.swaps: dict[bytes, bytes] = {}
        proxy.rewrite_headers(self.swaps)
        url = proxy.url(self.target.user, self.target.password, self.target.vhost)
        self.worker: Worker = tchu.worker(
            registry(self.runs), "wire", broker_url=url, fast_path=fast_path, event_concurrency=2
        )
        self.names = self._names()
        self.conn = connect(self.target)
        self.channel = self.conn.channel()
        for queue in (self.names.reply_queue, self.names.bystander):
            self.channel.queue_declare(queue, durable=False, auto_delete=False)
        self.publisher = RawPublisher(self.target)
        self.client: Client = tchu.client()
        assert self.client.call(CALL_TOPIC, {"n": 1}, timeout=10) == 1
        self.runs.clear()

    def _names(self) -> Names:
        (delay,) = retries.delays(self.worker.registry.handlers)
        return Names(
            service=self.worker.service,
            calls_exchange=self.tchu.settings.calls_exchange,
            events_exchange=self.tchu.settings.events_exchange,
            reply_queue=f"{topology.REPLY_QUEUE_PREFIX}{uuid.uuid4().hex}",
            bystander=f"{self.tchu.prefix}.bystander.calls",
            retry_queue=topology.retry_queue_name(self.worker.service, delay),
            login=self.target.user,
        )

    def close(self) -> None:
        self.worker.stop(timeout=5)  # before its proxy goes
        self.publisher.close()
        for queue in (self.names.reply_queue, self.names.bystander):
            self.channel.queue_delete(queue)
        self.conn.close()

    def depth(self, queue: str) -> int:
        return int(self.channel.queue_declare(queue, passive=True).message_count)

    def publish(self, built: list[Built]) -> None:
        """Publish `built`, each confirmed by the broker, after clearing what an earlier test left."""
        for queue in (self.names.queue("dead"), self.names.bystander, self.names.reply_queue):
            self.channel.queue_purge(queue)
        self.runs.clear()
        for message in built:
            self.swaps.update(message.swaps)
        self.publisher.publish_many((m.exchange, m.routing_key, m.header, m.body) for m in built)

    def settle(self, built: list[Built]) -> list[tuple[bytes, bytes]]:
        """Check `built` was settled once each by a worker that kept its connection; return its letters."""
        self.wait_settled(built)
        assert self.client.call(CALL_TOPIC, {"n": 7}, timeout=5) == 7, "no answer to a call after them"
        self.runs.remove("")  # that call's (its payload has no id)
        return self.check_each_once(built)

    def connections_lost(self) -> list[str]:
        return [
            f"{e.get('error_type')}: {e.get('error')}" for e in self.logs if e["event"] == "connection_lost"
        ]

    def wait_settled(self, built: list[Built]) -> None:
        """Wait until every arrival is settled (run or dead-lettered), then check that nothing moves on."""
        names, runs = self.names, self.runs
        arrivals = sum(m.arrivals(names) for m in built)
        broker_dead = sum(names.queue("dead") in m.destinations for m in built)  # the broker's CC copies
        queues = (names.queue("calls"), names.queue("events"), names.retry_queue, names.queue("dead"))
        deadline = time.monotonic() + SETTLE_WITHIN
        still_since, last = time.monotonic(), None
        while True:
            self._check_connection(built)
            depths = tuple(self.depth(q) for q in (*queues, names.bystander))
            assert depths[3] <= arrivals + broker_dead and sum(depths[:3]) <= arrivals, (
                f"queues grow: calls, events, retry, dead = {depths[:4]} for {len(built)} messages"
                f" ({arrivals} arrivals): the worker's copies come back (a loop); CC/BCC in them:"
                f" {suspects(built, ('CC', 'BCC'))}"
            )
            settled = len(runs) + depths[3] - broker_dead
            if (*depths, len(runs)) != last:
                last, still_since = (*depths, len(runs)), time.monotonic()
            done = depths[:3] == (0, 0, 0) and settled >= arrivals
            if done and time.monotonic() - still_since >= STILL_FOR:
                return  # `check_each_once` says which message settled more often than it arrived
            assert time.monotonic() < deadline, (
                f"not settled within {SETTLE_WITHIN} s: calls, events, retry, dead, bystander = {depths},"
                f" handler runs {len(runs)}, expected {arrivals} arrivals and {broker_dead} CC copies in"
                " dead;"
                f" {[m.describe() for m in built][:5]}"
            )
            time.sleep(0.05)

    def _check_connection(self, built: list[Built]) -> None:
        lost, generation = self.connections_lost(), self.worker._loop.generation
        assert generation == 1 and not lost, (
            f"the worker lost its connection {len(lost)} times (now on connection {generation}),"
            f" first over {lost[:1]}; hostile values in these messages: {suspects(built, HOSTILE)}"
        )

    def check_each_once(self, built: list[Built]) -> list[tuple[bytes, bytes]]:
        """Check each arrival ran its handler or was dead-lettered, once; return the worker's letters."""
        names = self.names
        letters = take_all(self.target, names.queue("dead"))
        mine = [m for m in letters if WORKER_LETTER in m[0]]
        worker_letters = ids(mine)
        cc_copies = ids([m for m in letters if WORKER_LETTER not in m[0]])
        bystander = ids(take_all(self.target, names.bystander))
        ran = Counter(self.runs)
        wrong = []
        for m in built:
            if ran[m.id] + worker_letters[m.id] != m.arrivals(names):
                wrong.append(
                    f"{m.describe()}: arrived {m.arrivals(names)} times, handler ran {ran[m.id]}, "
                    f"dead-lettered {worker_letters[m.id]}"
                )
            for queue, copies in ((names.queue("dead"), cc_copies), (names.bystander, bystander)):
                if copies[m.id] != (queue in m.destinations):
                    wrong.append(
                        f"{m.describe()}: {copies[m.id]} copies in {queue} (not the worker's letters)"
                    )
        strangers = (set(worker_letters) | set(cc_copies) | set(bystander) | set(ran)) - {m.id for m in built}
        assert not strangers, f"messages nobody published here: {sorted(strangers)[:5]}"
        assert not wrong, f"{len(wrong)} messages not settled exactly once:\n" + "\n".join(wrong[:15])
        return mine


def suspects(built: list[Built], marks: tuple[str, ...]) -> list[str]:
    return [m.describe() for m in built if any(k in label for label in m.draft.labels for k in marks)]


def ids(messages: list[tuple[bytes, bytes]]) -> Counter[str]:
    """Count the messages by the id in their body (`wf000042`)."""
    found = (ID.search(body) for _, body in messages)
    return Counter(match.group().decode() if match else "<no id>" for match in found)


def header_string(raw: bytes, key: bytes) -> bytes | None:
    """Return the long-string header `key` from a raw content header, without decoding the rest."""
    at = raw.find(bytes((len(key),)) + key + b"S")
    if at < 0:
        return None
    start = at + 1 + len(key) + 1
    (size,) = struct.unpack_from(">I", raw, start)
    return raw[start + 4 : start + 4 + size]
