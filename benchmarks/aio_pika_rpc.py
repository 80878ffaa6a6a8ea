"""aio-pika's RPC pattern (`aio_pika.patterns.JsonRPC`): the baseline's server and its driver.

Runs only in the aio-pika venv (`.venv-bench-aiopika`, made by `benchmarks.aio_pika_baseline`): aio-pika
is never imported into the main venv. Set up as aio-pika's documentation shows its RPC pattern
(`connect_robust`, a channel with its default publisher confirms, `RPC.create(channel)`,
`rpc.register(name, func, auto_delete=True)`), with `JsonRPC` instead of the pickling `RPC` so that the
bodies are the same JSON as the other contenders', and `exchange=` so that each run has its own
exchange and queue: aio-pika names the queue `{exchange}::{method}` and binds it there.

    python -m benchmarks.aio_pika_rpc serve --broker URL --exchange X --method M
    python -m benchmarks.aio_pika_rpc drive --broker URL --exchange X --method M \\
        --calls N --in-flight K --warmup W --pad-size P

`serve` answers with prefetch 1 and prints the ready line once it consumes, until SIGTERM or SIGINT.
`drive` makes the calls from K asyncio tasks sharing one connection, channel and `JsonRPC`, and prints
a `RunResult` JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

import aio_pika
from aio_pika.patterns import JsonRPC

from benchmarks.loadgen import RunResult, check_reply, request_body
from benchmarks.procs import READY_LINE

_CALL_TIMEOUT = 30.0


async def echo(**body: Any) -> dict[str, Any]:
    """Return the request: the RPC handler under test (aio-pika passes the request as keywords)."""
    return body


async def serve(broker_url: str, exchange: str, method: str) -> int:
    """Answer `method` calls until SIGTERM or SIGINT; print the ready line once consuming."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    connection = await aio_pika.connect_robust(broker_url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=1)
        rpc = await JsonRPC.create(channel, exchange=exchange)
        await rpc.register(method, echo, auto_delete=True)
        print(READY_LINE, flush=True)
        await stop.wait()
        await rpc.unregister(echo)
        await rpc.close()  # deletes this server's own reply queue
    return 0


async def drive(
    broker_url: str, exchange: str, method: str, n_calls: int, in_flight: int, warmup: int, pad_size: int
) -> RunResult:
    """Make `n_calls` timed calls from `in_flight` tasks after `warmup` untimed ones.

    As `benchmarks.loadgen.run_threads`: every caller makes its share of the warm-up calls, then the
    clock starts and every caller makes its share of the timed calls; latencies in seconds.
    """
    pad = "x" * pad_size
    shares, warm = _split(n_calls, in_flight), _split(warmup, in_flight)
    connection = await aio_pika.connect_robust(broker_url)
    async with connection:
        channel = await connection.channel()
        rpc = await JsonRPC.create(channel, exchange=exchange)

        async def call(n: int) -> None:
            async with asyncio.timeout(_CALL_TIMEOUT):
                reply = await rpc.call(method, request_body(n, pad))
            check_reply(reply, n)

        async def warm_up(index: int) -> None:
            for n in range(warm[index]):
                await call(index * 1_000_000 + n)

        async def timed(index: int) -> list[float]:
            clock = time.perf_counter
            out: list[float] = []
            for n in range(warm[index], warm[index] + shares[index]):
                began = clock()
                await call(index * 1_000_000 + n)
                out.append(clock() - began)
            return out

        try:
            async with asyncio.TaskGroup() as group:
                for index in range(in_flight):
                    group.create_task(warm_up(index))
            started = time.perf_counter()
            async with asyncio.TaskGroup() as group:
                parts = [group.create_task(timed(index)) for index in range(in_flight)]
            elapsed = time.perf_counter() - started
        finally:
            await rpc.close()  # deletes this driver's reply queue
    return RunResult(latencies=[x for part in parts for x in part.result()], elapsed=elapsed)


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def main(argv: Sequence[str] | None = None) -> int:
    """Run `python -m benchmarks.aio_pika_rpc serve|drive ...`."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.aio_pika_rpc")
    sub = parser.add_subparsers(dest="command", required=True)
    srv = sub.add_parser("serve", help="run one server process")
    drv = sub.add_parser("drive", help="make the timed calls and print a RunResult JSON line")
    for p in (srv, drv):
        p.add_argument("--broker", required=True)
        p.add_argument("--exchange", required=True, help="the RPC exchange of this run")
        p.add_argument("--method", required=True, help="the registered method (queue `{exchange}::{method}`)")
    drv.add_argument("--calls", type=int, required=True)
    drv.add_argument("--in-flight", type=int, default=1)
    drv.add_argument("--warmup", type=int, default=0)
    drv.add_argument("--pad-size", type=int, default=64)
    args = parser.parse_args(argv)
    if args.command == "serve":
        return asyncio.run(serve(args.broker, args.exchange, args.method))
    result = asyncio.run(
        drive(args.broker, args.exchange, args.method, args.calls, args.in_flight, args.warmup, args.pad_size)
    )
    sys.stdout.write(result.to_json() + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
