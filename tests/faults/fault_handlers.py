"""Handlers for the fault tests' `tchu-rpc worker` subprocesses, imported by path.

Every handler answers with the pid of the process that ran it. A handler given `runs` (a file path)
appends one line per run, `<n> <redelivered> <pid>`, with a single `write` on an `O_APPEND` file, so
that lines from concurrent processes never interleave and a SIGKILL loses none that were written.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from tchu_rpc import current_delivery, subscribe


@subscribe("rpc.faults.ping")
def ping(data: Any) -> int:
    """Return this worker process's pid."""
    return os.getpid()


@subscribe("rpc.faults.work")
def work(data: dict[str, Any]) -> dict[str, Any]:
    """Record the run (when asked), sleep `data["sleep"]` seconds, return `n` and this pid."""
    if data.get("runs"):
        _record(data["runs"], data["n"])
    if data.get("sleep"):
        time.sleep(data["sleep"])
    return {"n": data["n"], "pid": os.getpid()}


@subscribe("rpc.faults.die")
def die(data: dict[str, Any]) -> dict[str, Any]:
    """Kill this very process when `data["poison"]` is true (every delivery); else return `n`."""
    if data.get("runs"):
        _record(data["runs"], data["n"])
    if data.get("poison"):
        os.kill(os.getpid(), signal.SIGKILL)
    return {"n": data["n"], "pid": os.getpid()}


def _record(path: str, n: Any) -> None:
    delivery = current_delivery()
    redelivered = int(bool(delivery and delivery.redelivered))
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{n} {redelivered} {os.getpid()}\n".encode())
    finally:
        os.close(fd)
