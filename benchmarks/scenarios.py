"""Scenarios beyond the call matrix: events, payload sizes, serializers and memory over many calls.

Each takes contenders whose servers it starts (one process) and stops, and returns plain dataclasses
that the report renders and the JSON keeps.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from benchmarks.contenders import Cell, Contender, servers
from benchmarks.progress import Progress
from benchmarks.tchu_rpc_contender import CALL_TIMEOUT, TchuRpcContender, in_process
from tchu_rpc import AsyncClient, Client
from tchu_rpc.config import Serializer

PAYLOAD_SIZES = (100, 10_000, 1_000_000)
PAYLOAD_BYTES_PER_SIZE = 100_000_000  # fewer calls for big bodies: about 100 MB each way per size
SERIALIZERS: tuple[Serializer, ...] = ("json", "msgpack")
SERIALIZER_IN_FLIGHT = (1, 8)
EVENT_PUBLISHERS = (1, 8)
EVENT_TOPIC = "bench.event"
_EVENT_BATCH = 500  # events whose confirms are awaited together (publish_many; AsyncClient's tasks)
_EVENT_WAIT = 60.0  # seconds for the handler to see every event published


@dataclass(frozen=True)
class Variant:
    """A call cell of a scenario other than the matrix, e.g. payloads `10 KB` or serializers `msgpack`."""

    scenario: str
    label: str
    cell: Cell


@dataclass(frozen=True)
class EventRun:
    """`events` published by `publishers` threads: confirmed publish rate and publish->handler delays (ms)."""

    publishers: int
    events: int
    published_per_s: float
    delivered: int
    p50: float
    p90: float
    p99: float
    max: float
    mode: str = "publish"  # or "publish_many" (pipelined confirms), "AsyncClient" (one event loop)


@dataclass(frozen=True)
class MemoryPoint:
    """Resident set sizes (KiB, VmRSS) after `calls` calls."""

    calls: int
    worker_rss_kib: int
    client_rss_kib: int


@dataclass(frozen=True)
class MemoryRun:
    """RSS at each checkpoint and the growth from the first checkpoint to the last, in %."""

    in_flight: int
    points: list[MemoryPoint] = field(default_factory=list)

    @property
    def worker_growth_pct(self) -> float:
        """Growth of the worker's RSS from the first checkpoint to the last, in %."""
        first, last = self.points[0], self.points[-1]
        return (last.worker_rss_kib / first.worker_rss_kib - 1) * 100

    @property
    def client_growth_pct(self) -> float:
        """Growth of the client's RSS from the first checkpoint to the last, in %."""
        first, last = self.points[0], self.points[-1]
        return (last.client_rss_kib / first.client_rss_kib - 1) * 100


def payload_calls(size: int, calls: int) -> int:
    """Return how many timed calls a payload size gets: `calls`, fewer for big bodies, at least 20."""
    return max(20, min(calls, PAYLOAD_BYTES_PER_SIZE // size))


def run_payloads(
    contenders: Sequence[Contender], broker_url: str, calls: int, warmup: int, progress: Progress
) -> list[Variant]:
    """Sequential echo calls with bodies of 100 B, 10 KB and 1 MB, one server process each."""
    out: list[Variant] = []
    for contender in contenders:
        progress.stage(f"payloads: {contender.name}")
        with servers(contender, broker_url, 1):
            for size in PAYLOAD_SIZES:
                n = payload_calls(size, calls)
                run = contender.run_calls(broker_url, n, 1, "x" * size, min(warmup, n))
                out.append(Variant("payloads", _size(size), Cell.from_run(contender.name, 1, 1, run)))
                progress.advance(calls + warmup)
                progress.echo(f"  payload {_size(size):>6} {contender.name:<10} {_brief(out[-1].cell)}")
    return out


def run_serializers(
    contender: TchuRpcContender, broker_url: str, calls: int, warmup: int, progress: Progress
) -> list[Variant]:
    """tchu_rpc calls in JSON and in MessagePack, with a structured 100-record body (~7 KB in JSON)."""
    records = [{"id": i, "name": f"user-{i}", "score": i * 1.5, "tags": ["a", "b"]} for i in range(100)]
    out: list[Variant] = []
    progress.stage("serializers: tchu_rpc")
    with servers(contender, broker_url, 1):
        for serializer in SERIALIZERS:
            for in_flight in SERIALIZER_IN_FLIGHT:
                run = contender.run_calls(
                    broker_url, calls, in_flight, "", warmup, serializer=serializer, extra={"items": records}
                )
                cell = Cell.from_run(contender.name, 1, in_flight, run)
                out.append(Variant("serializers", f"{serializer} x {in_flight} in flight", cell))
                progress.advance(calls + warmup)
                progress.echo(f"  serializer {out[-1].label:<22} {_brief(cell)}")
    return out


def run_events(
    contender: TchuRpcContender, broker_url: str, events: int, progress: Progress
) -> list[EventRun]:
    """Publish `events` events from 1 and from 8 threads; take the handler's publish->handler delays."""
    out: list[EventRun] = []
    progress.stage("events: tchu_rpc")
    with servers(contender, broker_url, 1), contender.client(broker_url) as client:
        _publish_all(client, 50, 1)  # warm-up: connection, channels, queues
        _take_delays(client, 50)
        for publishers in EVENT_PUBLISHERS:
            elapsed = _publish_all(client, events, publishers)
            delays = sorted(_take_delays(client, events))
            out.append(_event_run(publishers, events, elapsed, delays))
            progress.advance(events)
            run = out[-1]
            progress.echo(
                f"  events x {publishers} publishers: {run.published_per_s:.0f} confirmed/s, "
                f"delivery p50 {run.p50:.2f} ms p99 {run.p99:.2f} ms"
            )
        for mode, publish in (("publish_many", _publish_many), ("AsyncClient", _publish_from_a_loop)):
            elapsed = publish(client, events)
            delays = sorted(_take_delays(client, events))
            out.append(replace(_event_run(1, events, elapsed, delays), mode=mode))
            progress.advance(events)
            run = out[-1]
            progress.echo(
                f"  events, {mode}: {run.published_per_s:.0f} confirmed/s, "
                f"delivery p50 {run.p50:.2f} ms p99 {run.p99:.2f} ms"
            )
    return out


def _publish_many(client: Client, events: int) -> float:
    """Publish `events` from one thread in batches whose confirms are pipelined; return the time taken."""
    started = time.perf_counter()
    for first in range(0, events, _EVENT_BATCH):
        batch = (
            (EVENT_TOPIC, {"ts": time.time(), "n": n})
            for n in range(first, min(events, first + _EVENT_BATCH))
        )
        for future in client.publish_many(batch):
            future.result(CALL_TIMEOUT)
    return time.perf_counter() - started


def _publish_from_a_loop(client: Client, events: int) -> float:
    """Publish `events` from `_EVENT_BATCH` tasks of one event loop with an `AsyncClient`."""

    async def publish_all() -> float:
        async with AsyncClient(settings=client.settings) as aclient:
            await aclient.call("rpc.bench.event_stats", {}, timeout=CALL_TIMEOUT)  # connects
            started = time.perf_counter()

            async def publisher(share: range) -> None:
                for n in share:
                    await aclient.publish(EVENT_TOPIC, {"ts": time.time(), "n": n})

            await asyncio.gather(*(publisher(range(i, events, _EVENT_BATCH)) for i in range(_EVENT_BATCH)))
            return time.perf_counter() - started

    return asyncio.run(publish_all())


def run_memory(
    contender: TchuRpcContender,
    broker_url: str,
    checkpoints: Sequence[int],
    in_flight: int,
    progress: Progress,
) -> MemoryRun:
    """Call one worker process from `in_flight` threads; read both RSS at each checkpoint (in calls)."""
    result = MemoryRun(in_flight)
    progress.stage("memory: tchu_rpc")
    with servers(contender, broker_url, 1), contender.client(broker_url) as client:
        worker_pid = int(client.call("rpc.bench.pid", {}, timeout=CALL_TIMEOUT))
        done = 0
        for target in sorted(checkpoints):
            _hammer(client, target - done, in_flight, progress)
            done = target
            gc.collect()
            point = MemoryPoint(done, rss_kib(worker_pid), rss_kib(None))
            result.points.append(point)
            progress.echo(
                f"  memory after {done} calls: worker {point.worker_rss_kib} KiB, "
                f"client {point.client_rss_kib} KiB"
            )
    return result


def rss_kib(pid: int | None) -> int:
    """Return the VmRSS of process `pid` (None: this process) in KiB, from /proc."""
    status = Path(f"/proc/{pid or 'self'}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("VmRSS:"))
    return int(line.split()[1])


def memory_supported(broker_url: str) -> bool:
    """Tell whether the memory scenario can run: it needs a worker process of its own and /proc."""
    return not in_process(broker_url) and Path("/proc/self/status").exists()


def _hammer(client: Client, calls: int, in_flight: int, progress: Progress) -> None:
    # No per-call record here: a growing list of latencies would be counted as the client's growth.
    left = [calls]
    lock = threading.Lock()
    errors: list[BaseException] = []

    def caller() -> None:
        try:
            while True:
                with lock:
                    if left[0] <= 0:
                        return
                    left[0] -= 1
                client.call("rpc.bench.echo", {"n": 0, "pad": "x" * 64}, timeout=CALL_TIMEOUT)
                progress.advance()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=caller, daemon=True) for _ in range(in_flight)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(f"memory scenario: {len(errors)} caller(s) failed; first: {errors[0]!r}")


def _publish_all(client: Client, events: int, publishers: int) -> float:
    shares = [events // publishers + (1 if i < events % publishers else 0) for i in range(publishers)]
    errors: list[BaseException] = []

    def publisher(share: int) -> None:
        try:
            for n in range(share):
                client.publish(EVENT_TOPIC, {"ts": time.time(), "n": n})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=publisher, args=(share,), daemon=True) for share in shares]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(f"events: {len(errors)} publisher(s) failed; first: {errors[0]!r}")
    return time.perf_counter() - started


def _take_delays(client: Client, expected: int) -> list[float]:
    deadline = time.monotonic() + _EVENT_WAIT
    while client.call("rpc.bench.event_stats", {}, timeout=CALL_TIMEOUT)["count"] < expected:
        if time.monotonic() > deadline:
            break  # report what arrived; `delivered` tells the shortfall
        time.sleep(0.02)
    return [
        float(x) for x in client.call("rpc.bench.event_stats", {"take": True}, timeout=CALL_TIMEOUT)["delays"]
    ]


def _event_run(publishers: int, events: int, elapsed: float, delays: list[float]) -> EventRun:
    def pct(p: float) -> float:
        return delays[max(0, int(-(-len(delays) * p // 100)) - 1)] * 1e3 if delays else float("nan")

    return EventRun(
        publishers=publishers,
        events=events,
        published_per_s=events / elapsed,
        delivered=len(delays),
        p50=pct(50),
        p90=pct(90),
        p99=pct(99),
        max=pct(100),
    )


def _size(size: int) -> str:
    return (
        f"{size // 1_000_000} MB"
        if size >= 1_000_000
        else f"{size // 1000} KB"
        if size >= 1000
        else f"{size} B"
    )


def _brief(cell: Cell) -> str:
    return f"{cell.calls} calls, p50 {cell.p50:.2f} ms, p99 {cell.p99:.2f} ms, {cell.calls_per_s:.0f} calls/s"
