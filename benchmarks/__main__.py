"""Benchmark tchu_rpc beside a raw-kombu floor, tchu-tchu on Celery and aio-pika (`python -m benchmarks`).

Also `tchu-rpc bench [ARGS]` from a clone of the repository.

Brokers: with no --broker, kombu's memory:// in this one process (memory:// exists only inside a
process): only the tchu_rpc contender runs, its workers as threads beside the client, and there is
no memory scenario. With an AMQP URL every contender runs, its servers as processes (tchu_rpc's
through `python -m tchu_rpc worker --concurrency N`). tchu-tchu (which also needs Redis as its result
backend) and aio-pika's RPC pattern each run from a venv of its own, made on first use; either is left
out with a notice when its venv cannot be made.

Scenarios (--scenarios): calls (the procs x in-flight matrix), events (confirmed publish rate and
publish->handler delay), payloads (100 B, 10 KB, 1 MB sequential calls), serializers (JSON vs
MessagePack), memory (a worker's and the client's RSS after 10,000 and 100,000 calls), topics (10,000
handlers: registration, a worker's start, uncached matching, events/s with 10 vs 10,000 patterns).

Output: the tables and ratios on stdout, and benchmarks/out/RUN.{json,md,png}; the PNG needs
matplotlib (`pip install -e '.[bench]'`), else it is skipped with a notice.

    python -m benchmarks                                              # memory://, tchu_rpc alone
    python -m benchmarks --broker amqp://guest:guest@127.0.0.1:5672//  # everything, ~10 minutes
    python -m benchmarks --broker URL --procs 1 --in-flight 1,8 --calls 50 --warmup 10 --scenarios calls
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import kombu
from kombu import Connection
from kombu.exceptions import OperationalError

from benchmarks import aio_pika_baseline, chart, cmdline, tchu_tchu_baseline
from benchmarks.aio_pika_baseline import AioPikaContender
from benchmarks.contenders import Contender, Plan, render
from benchmarks.floor import FloorContender
from benchmarks.runner import Results, run_scenarios
from benchmarks.tchu_rpc_async_contender import TchuRpcAsyncContender
from benchmarks.tchu_rpc_contender import TchuRpcContender, in_process
from benchmarks.tchu_tchu_baseline import DEFAULT_BACKEND, TchuTchuContender
from tchu_rpc.log import configure

DEFAULT_BROKER = "memory://"
OUT_DIR = Path(__file__).resolve().parent / "out"
SCENARIOS = ("calls", "events", "payloads", "serializers", "memory", "topics")
#: Scenarios that need an AMQP broker (memory:// lives inside one process).
AMQP_SCENARIOS = ("memory", "topics")
IN_PROCESS_CONTENDERS = ("tchu_rpc",)
AMQP_CONTENDERS = ("floor", "tchu_rpc", "tchu-tchu", "aio-pika")  # the default; floor+conf/+tx on request

# name -> factory(run_id, log_dir, args)
FACTORIES: dict[str, Callable[[str, Path, argparse.Namespace], Contender]] = {
    "floor": lambda run_id, log_dir, args: FloorContender(run_id, log_dir),
    "floor+conf": lambda run_id, log_dir, args: FloorContender(run_id, log_dir, confirm=True),
    "floor+tx": lambda run_id, log_dir, args: FloorContender(run_id, log_dir, tx=True),
    "tchu_rpc": lambda run_id, log_dir, args: TchuRpcContender(run_id, log_dir),
    "tchu_rpc-async": lambda run_id, log_dir, args: TchuRpcAsyncContender(run_id, log_dir),
    "tchu-tchu": lambda run_id, log_dir, args: TchuTchuContender(
        run_id, log_dir, backend_url=args.tchu_backend, pool=args.tchu_pool, quiet_logs=args.tchu_quiet_logs
    ),
    "aio-pika": lambda run_id, log_dir, args: AioPikaContender(run_id, log_dir),
}
# Contenders run from a venv of their own: name -> what makes it (raises when it cannot).
VENVS: dict[str, Callable[[], Path]] = {
    "tchu-tchu": tchu_tchu_baseline.ensure_venv,
    "aio-pika": aio_pika_baseline.ensure_venv,
}


def build_parser() -> argparse.ArgumentParser:
    """Return the harness's argument parser."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--broker", default=DEFAULT_BROKER, help="broker URL (default memory://: tchu_rpc alone, in-process)")
    add(
        "--contenders",
        type=cmdline.names,
        help=f"comma-separated, of {','.join(FACTORIES)} "
        f"(default: {','.join(AMQP_CONTENDERS)}; on memory://: tchu_rpc)",
    )
    add("--reference", default="tchu_rpc", help="the contender the table's ratios are taken to")
    add(
        "--scenarios",
        type=cmdline.names,
        help=f"comma-separated, of {','.join(SCENARIOS)} (default: all that can run)",
    )
    add("--procs", type=cmdline.ints, help="server processes, e.g. 1,2,4 (default: 1,2,4; memory://: 1)")
    add("--in-flight", type=cmdline.ints, default=Plan.in_flight, help="concurrent calls, e.g. 1,8,64")
    add("--calls", type=int, default=Plan.calls, help="timed calls per cell")
    add("--warmup", type=int, default=Plan.warmup, help="untimed calls per cell and round")
    add("--rounds", type=int, default=Plan.rounds, help="rounds the calls of a cell are split over")
    add("--pad", type=int, default=Plan.pad_size, help="bytes of padding per request in the call matrix")
    add("--events", type=int, default=2000, help="events per publisher count in the events scenario")
    add("--memory-calls", type=cmdline.ints, default=[10_000, 100_000], help="RSS checkpoints, in calls")
    add("--memory-in-flight", type=int, default=8, help="concurrent calls in the memory scenario")
    add("--tchu-backend", default=DEFAULT_BACKEND, help="tchu-tchu's Celery result backend")
    add("--tchu-pool", choices=("prefork", "solo"), default="prefork")
    add("--tchu-quiet-logs", action="store_true", help="silence tchu-tchu's INFO logs")
    add("--keep-logs", action="store_true", help="keep the server logs of a good run")
    add("--out", type=Path, help="stem of the JSON, markdown and PNG files (default: benchmarks/out/RUN)")
    add("--json", type=Path, help="write the JSON here instead")
    add("--chart", type=Path, help="write the PNG here instead")
    add("--no-progress", action="store_true", help="no progress bar (it shows only on a terminal anyway)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its report; return the exit code."""
    args = build_parser().parse_args(argv)
    configure("warning")  # in-process workers and clients log at info otherwise
    problem = _resolve(args)
    if problem:
        print(f"python -m benchmarks: {problem}", file=sys.stderr)
        return 2
    previous = signal.signal(signal.SIGTERM, cmdline.interrupt)  # so that finally blocks stop the servers
    try:
        return _run(args)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(args: argparse.Namespace) -> int:
    run_id = f"{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:6]}"
    log_dir = Path(tempfile.gettempdir()) / f"tchu-bench-{run_id}"
    plan = Plan(tuple(args.procs), tuple(args.in_flight), args.calls, args.warmup, args.pad, args.rounds)
    contenders = [FACTORIES[name](run_id, log_dir, args) for name in args.contenders]
    try:
        header = _header(args, run_id, plan, contenders)
    except (OSError, OperationalError) as exc:
        print(f"cannot reach the broker at {args.broker}: {exc}", file=sys.stderr)
        print("start one (e.g. `docker run -p 5672:5672 rabbitmq:3`) or pass --broker URL", file=sys.stderr)
        return 1
    for key, value in header.items():
        print(f"{key}: {value}")
    print(f"logs: {log_dir}\n", flush=True)
    results = run_scenarios(args, plan, contenders, enabled=not args.no_progress)  # failures keep the logs
    if not args.keep_logs:
        shutil.rmtree(log_dir, ignore_errors=True)
    _report(args, run_id, header, results)
    return 0


def _resolve(args: argparse.Namespace) -> str | None:
    """Fill in the defaults that depend on the broker; return a usage problem, if any."""
    memory = in_process(args.broker)
    explicit = args.contenders is not None
    args.contenders = args.contenders or list(IN_PROCESS_CONTENDERS if memory else AMQP_CONTENDERS)
    args.scenarios = args.scenarios or [s for s in SCENARIOS if not (memory and s in AMQP_SCENARIOS)]
    args.procs = args.procs or ([1] if memory else list(Plan.procs))
    unknown = [n for n in args.contenders if n not in FACTORIES] + [
        s for s in args.scenarios if s not in SCENARIOS
    ]
    if unknown:
        return f"unknown contender(s) or scenario(s) {unknown}; known: {list(FACTORIES)}, {list(SCENARIOS)}"
    if memory:
        others = [n for n in args.contenders if n not in IN_PROCESS_CONTENDERS]
        others += [s for s in args.scenarios if s in AMQP_SCENARIOS]
        if others:
            return (
                f"{args.broker} lives inside one process: only tchu_rpc runs there, without the "
                f"{' and '.join(AMQP_SCENARIOS)} scenarios (asked for {others}); give --broker amqp://... "
                "for the rest"
            )
    for name, ensure_venv in VENVS.items():
        if name in args.contenders and not explicit:
            try:
                ensure_venv()
            except (OSError, RuntimeError, ValueError) as exc:
                print(f"notice: {name} left out: its venv cannot be made ({exc})", file=sys.stderr)
                args.contenders.remove(name)
    return None


def _report(args: argparse.Namespace, run_id: str, header: dict[str, object], results: Results) -> None:
    stem = args.out or OUT_DIR / run_id
    if results.cells:
        print("\n" + render(results.cells, args.reference))
    print("\n" + results.summary())
    json_path = args.json or stem.with_suffix(".json")
    md_path = stem.with_suffix(".md")
    results.write(json_path, md_path, header)
    written = [json_path, md_path]
    if results.cells:
        png = args.chart or stem.with_suffix(".png")
        if chart.available():
            chart.draw(png, results.cells, f"tchu_rpc benchmark {run_id} on {header['broker']}")
            written.append(png)
        else:
            print("notice: no chart: matplotlib is missing (pip install -e '.[bench]')", file=sys.stderr)
    print("\nwritten: " + ", ".join(str(p) for p in written))


def _header(
    args: argparse.Namespace, run_id: str, plan: Plan, contenders: Sequence[Contender]
) -> dict[str, object]:
    header: dict[str, object] = {"run": run_id, "date": time.strftime("%Y-%m-%d %H:%M:%S %z")}
    if in_process(args.broker):
        header["broker"] = f"kombu {args.broker} (in-process: workers are threads beside the client)"
    else:
        with Connection(args.broker, connect_timeout=5) as conn:
            conn.connect()
            props = conn.connection.server_properties
        header["broker"] = f"{props.get('product')} {props.get('version')} on {props.get('platform')}"
    header["client"] = (
        f"Python {platform.python_version()}, kombu {kombu.__version__}, {os.cpu_count()} cores, "
        f"{platform.machine()} {platform.system()} {platform.release()}"
    )
    header["scenarios"] = ", ".join(args.scenarios)
    header["plan"] = (
        f"procs {list(plan.procs)} x in-flight {list(plan.in_flight)}, {plan.calls} timed + "
        f"{plan.warmup} warm-up calls per cell and round, {plan.rounds} round(s), JSON echo with "
        f"{plan.pad_size} bytes of padding"
    )
    header["load average at start"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    for contender in contenders:
        header[f"contender {contender.name}"] = contender.settings
    return header


if __name__ == "__main__":
    sys.exit(main())
