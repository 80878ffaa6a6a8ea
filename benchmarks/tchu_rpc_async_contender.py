"""tchu_rpc's `AsyncClient` as a contender: the same workers as `tchu_rpc`, callers as asyncio tasks.

The servers are `TchuRpcContender`'s (on exchanges of this contender's own); the callers are
`in_flight` tasks of one event loop sharing one `AsyncClient`, as an asyncio service would call.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from benchmarks.loadgen import RunResult, check_reply, request_body
from benchmarks.tchu_rpc_contender import CALL_TIMEOUT, TchuRpcContender
from tchu_rpc import AsyncClient
from tchu_rpc.config import Serializer


class TchuRpcAsyncContender(TchuRpcContender):
    """tchu_rpc's `AsyncClient.call` from asyncio tasks against `tchu-rpc worker` processes."""

    name = "tchu_rpc-async"

    @property
    def settings(self) -> str:
        """Describe the setup in one line for the report."""
        return f"{super().settings}; here an AsyncClient shared by asyncio tasks of one event loop"

    def run_calls(
        self,
        broker_url: str,
        n_calls: int,
        in_flight: int,
        pad: str,
        warmup: int,
        *,
        serializer: Serializer = "json",
        extra: dict[str, Any] | None = None,
    ) -> RunResult:
        """Make `n_calls` echo calls from `in_flight` tasks sharing one `AsyncClient`."""
        settings = self.settings_for(broker_url, serializer)
        return asyncio.run(asyncio.wait_for(_run(settings, n_calls, in_flight, pad, warmup), n_calls + 60))


async def _run(settings: Any, n_calls: int, in_flight: int, pad: str, warmup: int) -> RunResult:
    async with AsyncClient(settings=settings) as client:

        async def call(n: int) -> float:
            started = time.perf_counter()
            check_reply(await client.call("rpc.bench.echo", request_body(n, pad), timeout=CALL_TIMEOUT), n)
            return time.perf_counter() - started

        async def caller(share: range, go: asyncio.Event, out: list[float]) -> None:
            await go.wait()
            out.extend([await call(n) for n in share])

        for n in range(warmup):
            await call(n)
        go, out = asyncio.Event(), [[] for _ in range(in_flight)]  # type: list[list[float]]
        tasks = [
            asyncio.create_task(caller(range(i, n_calls, in_flight), go, out[i])) for i in range(in_flight)
        ]
        started = time.perf_counter()
        go.set()
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
    return RunResult(latencies=[x for part in out for x in part], elapsed=elapsed)
