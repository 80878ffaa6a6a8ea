"""Make timed tchu-tchu RPC calls and print a `RunResult` JSON line (runs only in the tchu-tchu venv).

    BENCH_TCHU_*=... python -m benchmarks.tchu_tchu_driver --calls N --in-flight K --warmup W --pad-size P
    BENCH_TCHU_*=... python -m benchmarks.tchu_tchu_driver --delete-results

All caller threads share one `TchuClient` and its Celery app, as in a threaded web server.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from tchu_tchu import TchuClient

from benchmarks.loadgen import Call, check_reply, request_body, run_threads
from benchmarks.tchu_tchu_app import KEY_PREFIX, app

TOPIC = "rpc.bench.echo"
_CALL_TIMEOUT = 30


def main(argv: Sequence[str] | None = None) -> int:
    """Run the calls, print the result line, delete this run's results from the backend."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tchu_tchu_driver")
    parser.add_argument("--calls", type=int, default=0)
    parser.add_argument("--in-flight", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=0)
    parser.add_argument("--pad-size", type=int, default=64)
    parser.add_argument("--delete-results", action="store_true", help="only delete this run's results")
    args = parser.parse_args(argv)
    if args.delete_results:
        _delete_results()
        return 0
    client = TchuClient(celery_app=app)
    pad = "x" * args.pad_size

    def factory(index: int) -> tuple[Call, Callable[[], None]]:
        def call(n: int) -> None:
            check_reply(client.call(TOPIC, request_body(n, pad), timeout=_CALL_TIMEOUT), n)

        return call, lambda: None

    try:
        result = run_threads(factory, args.calls, args.in_flight, args.warmup)
    finally:
        _delete_results()
    sys.stdout.write(result.to_json() + "\n")
    sys.stdout.flush()
    return 0


def _delete_results() -> None:
    backend = app.backend
    if not hasattr(backend, "client"):
        return
    redis = backend.client
    keys = list(redis.scan_iter(match=f"{KEY_PREFIX}*", count=1000))
    for start in range(0, len(keys), 1000):
        redis.delete(*keys[start : start + 1000])


if __name__ == "__main__":
    sys.exit(main())
