"""Handlers of the tchu_rpc contender, served by `python -m tchu_rpc worker benchmarks.tchu_rpc_handlers`.

`rpc.bench.echo` is the call under test. `bench.event` records how long each event took from its
publisher (`ts`, wall-clock seconds in the payload) to this handler; `rpc.bench.event_stats` hands
those delays to the harness, and `rpc.bench.pid` names the process that answers (for its RSS).
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from tchu_rpc import subscribe

_delays: list[float] = []
_lock = threading.Lock()


@subscribe("rpc.bench.echo")
def echo(data: Any) -> Any:
    """Return the request."""
    return data


@subscribe("rpc.bench.pid")
def pid(data: Any) -> int:
    """Return the pid of the worker process that runs this handler."""
    return os.getpid()


@subscribe("bench.event")
def on_event(data: dict[str, Any]) -> None:
    """Record the delay from the event's publication (its `ts`) to now."""
    delay = time.time() - float(data["ts"])
    with _lock:
        _delays.append(delay)


@subscribe("rpc.bench.event_stats")
def event_stats(data: dict[str, Any]) -> dict[str, Any]:
    """Return the count of events recorded; with `take`, also their delays (seconds), and forget them."""
    with _lock:
        count = len(_delays)
        if not data.get("take"):
            return {"count": count}
        taken = list(_delays)
        _delays.clear()
    return {"count": count, "delays": taken}
