"""Drive N concurrent callers in threads and time each call (standard library only).

Shared by every contender, also inside the tchu-tchu venv, so it imports nothing outside the stdlib.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

# One caller: `call(n)` makes request number n and returns when its reply has been checked.
Call = Callable[[int], None]
# Build caller `index` (connect, declare); returns its call function and a closer.
CallerFactory = Callable[[int], tuple[Call, Callable[[], None]]]

_SETUP_TIMEOUT = 60.0


@dataclass(frozen=True)
class RunResult:
    """Per-call latencies (seconds) and the wall time of the timed phase."""

    latencies: list[float]
    elapsed: float

    def to_json(self) -> str:
        """Return this result as one JSON line."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> RunResult:
        """Parse a line written by `to_json`."""
        data = json.loads(text)
        return cls(latencies=[float(x) for x in data["latencies"]], elapsed=float(data["elapsed"]))


def request_body(n: int, pad: str) -> dict[str, object]:
    """Return the echo request every contender sends."""
    return {"n": n, "pad": pad}


def check_reply(reply: object, n: int) -> None:
    """Raise unless `reply` echoes request number `n`."""
    if not isinstance(reply, dict) or reply.get("n") != n:
        raise AssertionError(f"reply for request {n} does not echo it: {reply!r:.200}")


def run_threads(factory: CallerFactory, n_calls: int, in_flight: int, warmup: int) -> RunResult:
    """Run `n_calls` timed calls spread over `in_flight` threads, after `warmup` untimed calls.

    Every thread connects and warms up before a barrier; the clock starts when all are ready.
    """
    shares = _split(n_calls, in_flight)
    warm = _split(warmup, in_flight)
    barrier = threading.Barrier(in_flight + 1)
    results: list[list[float]] = [[] for _ in range(in_flight)]
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            _caller(factory, index, warm[index], shares[index], barrier, results[index])
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(in_flight)]
    for thread in threads:
        thread.start()
    try:
        barrier.wait(timeout=_SETUP_TIMEOUT)
    except threading.BrokenBarrierError:
        pass
    started = time.perf_counter()
    deadline = started + _SETUP_TIMEOUT + n_calls  # generous: a call may take up to a second
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.perf_counter()))
    elapsed = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{len(errors)} caller(s) failed; first: {errors[0]!r}") from errors[0]
    if any(thread.is_alive() for thread in threads):
        raise RuntimeError("callers did not finish in time")
    return RunResult(latencies=[x for part in results for x in part], elapsed=elapsed)


def _caller(
    factory: CallerFactory,
    index: int,
    warmup: int,
    share: int,
    barrier: threading.Barrier,
    out: list[float],
) -> None:
    call, close = factory(index)
    try:
        base = index * 1_000_000
        for n in range(warmup):
            call(base + n)
        barrier.wait(timeout=_SETUP_TIMEOUT)
        clock = time.perf_counter
        for n in range(warmup, warmup + share):
            began = clock()
            call(base + n)
            out.append(clock() - began)
    finally:
        close()


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]
