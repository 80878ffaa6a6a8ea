"""Run the contenders side by side against a real RabbitMQ and print the table (`python -m benchmarks`).

python -m benchmarks                                   # full matrix, floor and tchu-tchu
python -m benchmarks --procs 1 --in-flight 1,8 --calls 50 --warmup 10   # a smoke run
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
from types import FrameType

import kombu
from kombu import Connection
from kombu.exceptions import OperationalError

from benchmarks.contenders import Contender, Plan, measure, render, write_json
from benchmarks.floor import FloorContender
from benchmarks.tchu_tchu_baseline import DEFAULT_BACKEND, TchuTchuContender

DEFAULT_BROKER = "amqp://guest:guest@127.0.0.1:5672//"
OUT_DIR = Path(__file__).resolve().parent / "out"

# name -> factory(run_id, log_dir, args); tchu_rpc joins here as one more entry.
FACTORIES: dict[str, Callable[[str, Path, argparse.Namespace], Contender]] = {
    "floor": lambda run_id, log_dir, args: FloorContender(run_id, log_dir),
    "tchu-tchu": lambda run_id, log_dir, args: TchuTchuContender(
        run_id, log_dir, backend_url=args.tchu_backend, pool=args.tchu_pool, quiet_logs=args.tchu_quiet_logs
    ),
}


def build_parser() -> argparse.ArgumentParser:
    """Return the harness's argument parser."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--broker", default=os.environ.get("TCHU_RPC_BROKER_URL", DEFAULT_BROKER))
    parser.add_argument("--contenders", type=_names, default=list(FACTORIES), help="comma-separated")
    parser.add_argument("--reference", default="floor", help="the contender ratios are taken to")
    parser.add_argument("--procs", type=_ints, default=Plan.procs, help="server processes, e.g. 1,2,4")
    parser.add_argument("--in-flight", type=_ints, default=Plan.in_flight, help="callers, e.g. 1,8,64")
    parser.add_argument("--calls", type=int, default=Plan.calls, help="timed calls per cell")
    parser.add_argument("--warmup", type=int, default=Plan.warmup, help="untimed calls per cell")
    parser.add_argument("--pad", type=int, default=Plan.pad_size, help="bytes of padding per request")
    parser.add_argument("--tchu-backend", default=DEFAULT_BACKEND, help="tchu-tchu's Celery result backend")
    parser.add_argument("--tchu-pool", choices=("prefork", "solo"), default="prefork")
    parser.add_argument("--tchu-quiet-logs", action="store_true", help="silence tchu-tchu's INFO logs")
    parser.add_argument("--keep-logs", action="store_true", help="keep the server logs of a good run")
    parser.add_argument("--json", type=Path, help="write the cells here (default: benchmarks/out/RUN.json)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its report; return the exit code."""
    args = build_parser().parse_args(argv)
    unknown = [n for n in args.contenders if n not in FACTORIES]
    if unknown:
        print(f"unknown contender(s) {unknown}; known: {sorted(FACTORIES)}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupt)  # so that finally blocks stop the servers
    run_id = f"{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:6]}"
    log_dir = Path(tempfile.gettempdir()) / f"tchu-bench-{run_id}"
    plan = Plan(tuple(args.procs), tuple(args.in_flight), args.calls, args.warmup, args.pad)
    contenders = [FACTORIES[name](run_id, log_dir, args) for name in args.contenders]
    try:
        header = _header(args.broker, run_id, plan, contenders)
    except (OSError, OperationalError) as exc:
        print(f"cannot reach RabbitMQ at {args.broker}: {exc}", file=sys.stderr)
        print("start one (e.g. `docker run -p 5672:5672 rabbitmq:3`) or pass --broker URL", file=sys.stderr)
        return 1
    for key, value in header.items():
        print(f"{key}: {value}")
    print(f"logs: {log_dir}\n", flush=True)
    cells = measure(contenders, args.broker, plan)  # on failure the logs stay for a look
    if not args.keep_logs:
        shutil.rmtree(log_dir, ignore_errors=True)
    print("\n" + render(cells, args.reference))
    out = args.json or OUT_DIR / f"{run_id}.json"
    write_json(out, header, cells)
    print(f"\nwritten: {out}")
    return 0


def _header(broker_url: str, run_id: str, plan: Plan, contenders: Sequence[Contender]) -> dict[str, object]:
    with Connection(broker_url, connect_timeout=5) as conn:
        conn.connect()
        props = conn.connection.server_properties
    header: dict[str, object] = {
        "run": run_id,
        "broker": f"{props.get('product')} {props.get('version')} on {props.get('platform')}",
        "client": f"Python {platform.python_version()}, kombu {kombu.__version__}, {os.cpu_count()} cores",
        "plan": (
            f"procs {list(plan.procs)} x in-flight {list(plan.in_flight)}, {plan.calls} timed + "
            f"{plan.warmup} warm-up calls per cell, JSON echo with {plan.pad_size} bytes of padding"
        ),
    }
    for contender in contenders:
        header[f"contender {contender.name}"] = contender.settings
    return header


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


if __name__ == "__main__":
    sys.exit(main())
