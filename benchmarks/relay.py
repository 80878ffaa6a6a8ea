"""The cost of the relay: calls from a client on the worker's node vs a client on another node.

    python -m benchmarks.relay [--calls 3000] [--rounds 3] [--call-concurrency 1]

A worker answers a caller on its own node over its own connection, and a caller on another node
through its relay (a second connection; the ack waits for the reply's confirm there,
tchu_rpc/_worker/relay.py). On the private three-node cluster of tests/cluster/nodes.py, one worker
process (`python -m tchu_rpc worker`, quorum queues) connects to node 1; two clients, on node 1 and
on node 2, take turns, interleaved per round: sequential calls (p50, p99), then calls from 8 threads
(calls/s). Prints one line per client and the other / same ratios.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType

from tchu_rpc import Client, Settings

ROOT = Path(__file__).resolve().parent.parent
IN_FLIGHT = 8


def _nodes() -> ModuleType:
    spec = importlib.util.spec_from_file_location("nodes", ROOT / "tests" / "cluster" / "nodes.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["nodes"] = module
    spec.loader.exec_module(module)
    return module


def _ready(client: Client) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            client.call("rpc.bench.echo", 1, timeout=2)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise


def _round(client: Client, calls: int) -> tuple[list[float], float]:
    for _ in range(200):  # warm-up
        client.call("rpc.bench.echo", 1, timeout=5)
    latencies = []
    for _ in range(calls):
        began = time.perf_counter()
        client.call("rpc.bench.echo", 1, timeout=5)
        latencies.append(time.perf_counter() - began)
    began = time.perf_counter()
    with ThreadPoolExecutor(IN_FLIGHT) as pool:
        list(pool.map(lambda n: client.call("rpc.bench.echo", n, timeout=10), range(calls)))
    return latencies, calls / (time.perf_counter() - began)


def main(argv: list[str] | None = None) -> int:
    """Run the comparison; return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.relay", description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=3000, help="sequential and concurrent calls per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--call-concurrency", type=int, default=1, help="the worker's call threads")
    args = parser.parse_args(argv)
    with _nodes().running_cluster() as cluster:
        first, second = cluster.nodes[0], cluster.nodes[1]
        service, exchange = f"relaybench{uuid.uuid4().hex[:6]}", f"relaybench{uuid.uuid4().hex[:6]}"
        env = {
            **os.environ,
            "TCHU_RPC_QUEUE_TYPE": "quorum",
            "TCHU_RPC_CALLS_EXCHANGE": exchange,
            "TCHU_RPC_BROKER_URL": first.url,
            "TCHU_RPC_CALL_CONCURRENCY": str(args.call_concurrency),
            "PYTHONPATH": str(ROOT),
        }
        argv_worker = [
            sys.executable,
            "-m",
            "tchu_rpc",
            "worker",
            "benchmarks.tchu_rpc_handlers",
            "--queue",
            service,
        ]
        worker = subprocess.Popen(
            argv_worker, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        clients = {
            name: Client(settings=Settings(broker_url=node.url, calls_exchange=exchange, queue_type="quorum"))
            for name, node in (("same node", first), ("other node", second))
        }
        try:
            for client in clients.values():
                _ready(client)
            latencies: dict[str, list[float]] = {name: [] for name in clients}
            rates: dict[str, list[float]] = {name: [] for name in clients}
            for _ in range(args.rounds):
                for name, client in clients.items():
                    sequential, rate = _round(client, args.calls)
                    latencies[name] += sequential
                    rates[name].append(rate)
        finally:
            for client in clients.values():
                client.close()
            worker.terminate()
            worker.wait(10)
    summary = {}
    for name in clients:
        ordered = sorted(latencies[name])
        p50, p99 = statistics.median(ordered) * 1000, ordered[int(len(ordered) * 0.99)] * 1000
        rate = statistics.median(rates[name])
        summary[name] = (p50, p99, rate)
        rounds = ", ".join(f"{r:.0f}" for r in rates[name])
        print(
            f"{name:10}  sequential p50 {p50:.2f} ms  p99 {p99:.2f} ms  "
            f"{IN_FLIGHT} in flight {rate:.0f} calls/s ({rounds})"
        )
    same, other = summary["same node"], summary["other node"]
    print(
        f"other / same: p50 {other[0] / same[0]:.2f}x  p99 {other[1] / same[1]:.2f}x  "
        f"calls/s {other[2] / same[2]:.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
