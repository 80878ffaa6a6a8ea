"""The `tchu-rpc` command: a thin shell over the library (worker, call, publish, ping, inspect, dead, ...)."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from tchu_rpc import __version__, dead, demo, inspection, ping
from tchu_rpc.client import Client
from tchu_rpc.config import Settings
from tchu_rpc.errors import TchuError
from tchu_rpc.log import LogOptions, configure
from tchu_rpc.options import add_global_options, add_worker_options, settings_overrides


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of `tchu-rpc`."""
    parser = argparse.ArgumentParser(prog="tchu-rpc", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    add_global_options(parser)
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, text: str) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=text)
        add_global_options(cmd, in_subcommand=True)  # accepted after the command too
        return cmd

    worker = command("worker", "run worker processes for handler modules")
    worker.add_argument("modules", nargs="+", help="modules (dotted names or .py files) to import")
    add_worker_options(worker)

    for name, text in (("call", "call a topic and print the result"), ("publish", "publish an event")):
        cmd = command(name, text)
        cmd.add_argument("topic")
        cmd.add_argument("data", help="JSON value")
        cmd.add_argument("--timeout", type=float)

    ping_cmd = command("ping", "call a topic's worker without running its handler; print the round trip")
    ping_cmd.add_argument("topic", help="a call topic")
    ping_cmd.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
    ping_cmd.add_argument("--json", action="store_true", help="print JSON")

    inspect_cmd = command("inspect", "show a service's queues from the broker: depths, consumers, bindings")
    inspect_cmd.add_argument("service", help="the service's name (queue prefix)")
    inspect_cmd.add_argument("--management-url", metavar="URL", help="management API (bindings)")
    inspect_cmd.add_argument("--json", action="store_true", help="print JSON")

    dead_cmd = command("dead", "list a service's dead letters, or replay them (--replay)")
    dead_cmd.add_argument("service", help="the service's name (queue prefix)")
    dead_cmd.add_argument("--replay", action="store_true", help="move letters back to the service's queues")
    dead_cmd.add_argument("--topic", metavar="PATTERN", help="only letters whose topic matches (* and #)")
    dead_cmd.add_argument("--limit", type=int, help="at most N letters (listing: 50; replay: all)")
    dead_cmd.add_argument("--calls", action="store_true", help="replay calls too (their callers are gone)")
    dead_cmd.add_argument("--json", action="store_true", help="print JSON")

    command("demo", "run the demo (memory:// unless --broker is given)")

    # Its arguments are the harness's own (`tchu-rpc bench --help` lists them): main() forwards them.
    sub.add_parser(
        "bench",
        add_help=False,
        help="run the benchmark harness, from a clone of the repository (see `tchu-rpc bench --help`)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `tchu-rpc` with `argv`; return the exit code."""
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and args.command != "bench":
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    worker = args.command == "worker"
    configure(args.log_level or ("info" if worker else "warning"), json=args.log_format == "json")
    if args.command == "bench":
        return _bench(rest)
    try:
        return _dispatch(args)
    except TchuError as exc:
        print(f"tchu-rpc: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "demo":
        return demo.run(args.broker or "memory://")
    settings = Settings.from_env(**settings_overrides(vars(args)))
    if args.command == "worker":
        return _worker(args, settings)
    if args.command == "ping":
        return ping.run(args.topic, settings, args.timeout, as_json=args.json)
    if args.command == "inspect":
        return inspection.run(args.service, settings, management_url=args.management_url, as_json=args.json)
    if args.command == "dead":
        return dead.run(
            args.service,
            settings,
            replay=args.replay,
            topic=args.topic,
            limit=args.limit,
            calls=args.calls,
            as_json=args.json,
        )
    data = _json(args.data)
    with Client(settings=settings) as client:
        if args.command == "call":
            print(json.dumps(client.call(args.topic, data, timeout=args.timeout)))
        else:
            client.publish(args.topic, data, timeout=args.timeout)
    return 0


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    from tchu_rpc.process import Supervisor, import_handlers

    import_handlers(args.modules)  # fail fast here, before spawning children
    logs = LogOptions(args.log_level or "info", args.log_format or "console")
    supervisor = Supervisor(
        args.modules,
        args.queue,
        settings,
        args.concurrency,
        logs,
        health_port=args.health_port,
        metrics_port=args.metrics_port,
    )
    return supervisor.run()


def _bench(argv: list[str]) -> int:
    # `benchmarks` is a folder of the repository, not part of the installed package.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        harness = importlib.import_module("benchmarks.__main__")
    except ImportError as exc:
        print(
            f"tchu-rpc bench: the benchmarks cannot be imported ({exc}); run from a clone of the "
            "repository (its top folder holds `benchmarks/`)",
            file=sys.stderr,
        )
        return 2
    return int(harness.main(argv))


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"tchu-rpc: data is not JSON: {exc}") from None
