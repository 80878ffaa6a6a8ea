"""Handlers of the `topics` scenario, served by `python -m tchu_rpc worker benchmarks.topics_handlers`.

`TCHU_BENCH_PATTERNS` wildcard event patterns `bench.t<i>.*` (default 10), all recording when an
event arrived (wall-clock seconds), and `rpc.bench.topic_stats`, which hands the harness the count
and the last arrival.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from tchu_rpc import subscribe

PATTERNS_ENV = "TCHU_BENCH_PATTERNS"

_arrivals: list[float] = []
_lock = threading.Lock()


def pattern(i: int) -> str:
    """Return the scenario's `i`-th wildcard event pattern."""
    return f"bench.t{i}.*"


def on_event(data: Any) -> None:
    """Record when the event arrived."""
    now = time.time()
    with _lock:
        _arrivals.append(now)


@subscribe("rpc.bench.topic_stats")
def topic_stats(data: dict[str, Any]) -> dict[str, Any]:
    """Return how many events arrived and when the last did; with `take`, forget them."""
    with _lock:
        stats = {"count": len(_arrivals), "last": max(_arrivals, default=0.0)}
        if data.get("take"):
            _arrivals.clear()
    return stats


for _i in range(int(os.environ.get(PATTERNS_ENV, "10"))):
    subscribe(pattern(_i))(on_event)
