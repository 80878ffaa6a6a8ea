"""Handlers for tests/integration/test_process.py, imported by `tchu-rpc worker` subprocesses by path.

Every handler answers with the pid of the worker process that ran it, so the tests can tell which
child of the supervisor did the work.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from tchu_rpc import current_delivery, subscribe


@subscribe("rpc.proc.ping")
def ping(data: Any) -> int:
    """Return this worker process's pid."""
    return os.getpid()


@subscribe("rpc.proc.echo")
def echo(data: dict[str, Any]) -> dict[str, Any]:
    """Return the request's `n` with this process's pid."""
    return {"n": data["n"], "pid": os.getpid()}


@subscribe("rpc.proc.slow")
def slow(data: dict[str, Any]) -> dict[str, Any]:
    """Write this pid to `data["pidfile"]`, then, on a first delivery only, sleep `data["seconds"]`."""
    delivery = current_delivery()
    assert delivery is not None
    _write_atomically(Path(data["pidfile"]), str(os.getpid()))
    if not delivery.redelivered:
        time.sleep(data["seconds"])
    return {"n": data["n"], "pid": os.getpid(), "redelivered": delivery.redelivered}


@subscribe("rpc.proc.slow_async")
async def slow_async(data: dict[str, Any]) -> dict[str, Any]:
    """`slow` as an `async def`: awaits its sleep on the handler thread's event loop."""
    delivery = current_delivery()
    assert delivery is not None
    _write_atomically(Path(data["pidfile"]), str(os.getpid()))
    if not delivery.redelivered:
        await asyncio.sleep(data["seconds"])
    return {"n": data["n"], "pid": os.getpid(), "redelivered": delivery.redelivered}


@subscribe("proc.touched")
def touched(data: dict[str, Any]) -> None:
    """Write the event's `text` to the file `data["path"]` (proves an event arrived)."""
    _write_atomically(Path(data["path"]), data["text"])


def _write_atomically(path: Path, text: str) -> None:
    # A test polls for the file; it must never see it half-written.
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
