"""CPU time per call in the client, the server and the broker: where a call's work goes.

    python -m benchmarks.cpu_per_call [--broker URL] [--calls 3000]

Runs floor, floor+conf, floor+tx and tchu_rpc with one server process at 1 and 8 calls in flight,
and reads the CPU time (user + system, /proc/PID/stat) of the server process and of the broker
(`beam.smp`, so on the same machine only) before and after, and this process's own for the callers.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.contenders import Contender
from benchmarks.floor import FloorContender
from benchmarks.tchu_rpc_contender import TchuRpcContender

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """Return the user + system CPU time of process `pid`."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def server_pids(contender: Contender, broker_url: str) -> list[int]:
    """Return the pids that serve calls (tchu_rpc: the worker child, not its supervisor)."""
    if isinstance(contender, TchuRpcContender):
        with contender.client(broker_url) as client:
            return [int(client.call("rpc.bench.pid", {}))]
    return [proc.pid for proc in contender._servers._procs]  # type: ignore[attr-defined]


def main(argv: Sequence[str] | None = None) -> int:
    """Print CPU ms per call for each contender and in-flight count."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cpu_per_call", description=__doc__)
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672//")
    parser.add_argument("--calls", type=int, default=3000)
    args = parser.parse_args(argv)
    beam = int(subprocess.check_output(["pgrep", "-f", "beam.smp"]).split()[0])
    logs = Path(tempfile.mkdtemp(prefix="tchu-cpu-"))
    contenders: list[Contender] = [
        FloorContender("cpu", logs),
        FloorContender("cpu", logs, confirm=True),
        FloorContender("cpu", logs, tx=True),
        TchuRpcContender("cpu", logs),
    ]
    for contender in contenders:
        contender.start_servers(args.broker, 1)
        try:
            pids = server_pids(contender, args.broker)
            for in_flight in (1, 8):
                contender.run_calls(args.broker, 200, in_flight, "x" * 64, 0)  # warm-up
                before = (time.process_time(), sum(map(cpu_seconds, pids)), cpu_seconds(beam))
                run = contender.run_calls(args.broker, args.calls, in_flight, "x" * 64, 0)
                after = (time.process_time(), sum(map(cpu_seconds, pids)), cpu_seconds(beam))
                client, server, broker = (
                    1e3 * (b - a) / args.calls for a, b in zip(before, after, strict=True)
                )
                print(
                    f"{contender.name:<11} in-flight {in_flight}: {args.calls / run.elapsed:6.0f} calls/s; "
                    f"CPU ms per call: client {client:.3f}, server {server:.3f}, broker {broker:.3f}, "
                    f"total {client + server + broker:.3f}",
                    flush=True,
                )
        finally:
            contender.stop_servers()
    return 0


if __name__ == "__main__":
    sys.exit(main())
