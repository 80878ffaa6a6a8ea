"""What handing a settled call to the event loop costs: `AsyncClient`'s bridge against `asyncio.wrap_future`.

    python -m benchmarks.async_bridge [--futures 20000] [--rounds 3]

A thread settles `CallFuture`s (the futures a `Client` returns) while the event loop awaits them in
groups of 100. `call_soon_threadsafe` is `tchu_rpc.aio`'s bridge: a done-callback on the settling
thread schedules the outcome on the loop. `wrap_future` is asyncio's: its done-callback goes through
the client's callback thread first (`CallFuture.add_done_callback`), a second hand-over.
"""

from __future__ import annotations

import argparse
import asyncio
import queue
import threading
import time
from collections.abc import Sequence
from concurrent import futures
from typing import Any

from tchu_rpc._client.callbacks import Callbacks, CallFuture
from tchu_rpc.aio import _copy

_GROUP = 100


def _settle(jobs: queue.SimpleQueue[CallFuture | None]) -> None:
    while (future := jobs.get()) is not None:
        future.set_result(1)


def _bridged(loop: asyncio.AbstractEventLoop, future: CallFuture) -> asyncio.Future[Any]:
    waiter = loop.create_future()
    futures.Future.add_done_callback(future, lambda _: loop.call_soon_threadsafe(_copy, future, waiter))
    return waiter


async def _run(kind: str, count: int, callbacks: Callbacks) -> tuple[float, float]:
    """Return wall and CPU microseconds per future."""
    loop = asyncio.get_running_loop()
    jobs: queue.SimpleQueue[CallFuture | None] = queue.SimpleQueue()
    settler = threading.Thread(target=_settle, args=(jobs,), daemon=True)
    settler.start()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(count // _GROUP):
        waiters = []
        for _ in range(_GROUP):
            future = CallFuture()
            future.callbacks = callbacks
            waiters.append(asyncio.wrap_future(future) if kind == "wrap_future" else _bridged(loop, future))
            jobs.put(future)
        await asyncio.gather(*waiters)
    jobs.put(None)
    settler.join(10)
    return (time.perf_counter() - wall) / count * 1e6, (time.process_time() - cpu) / count * 1e6


def main(argv: Sequence[str] | None = None) -> int:
    """Run the comparison, interleaved, and print one line per run."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.async_bridge")
    parser.add_argument("--futures", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    callbacks = Callbacks("bench-callbacks")
    for _ in range(args.rounds):
        for kind in ("call_soon_threadsafe", "wrap_future"):
            wall, cpu = asyncio.run(_run(kind, args.futures, callbacks))
            print(f"{kind:22} {wall:6.1f} us wall {cpu:6.1f} us CPU per future")
    callbacks.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
