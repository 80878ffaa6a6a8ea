"""The `tchu-rpc` command: a thin shell over the library (worker, call, ping, inspect, dead, schema...)."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tchu_rpc import __version__, dead, definitions, demo, inspection, ping
from tchu_rpc.client import Client
from tchu_rpc.config import Settings
from tchu_rpc.errors import TchuError
from tchu_rpc.log import LogOptions, configure
from tchu_rpc.options import add_declare_option, add_global_options, add_worker_options, settings_overrides


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

    topo = command("topology", "print a service's RabbitMQ definitions document and its users' permissions")
    topo.add_argument("modules", nargs="+", help="modules (dotted names or .py files) to import")
    topo.add_argument("--queue", required=True, help="the service's name (queue prefix)")
    topo.add_argument("--vhost", help="the vhost the definitions are for (default: the broker URL's)")
    topo.add_argument("--worker-user", metavar="USER", help="also grant USER the worker's permissions")
    topo.add_argument("--caller-user", metavar="USER", help="also grant USER the caller's permissions")

    for name, text in (("call", "call a topic and print the result"), ("publish", "publish an event")):
        cmd = command(name, text)
        cmd.add_argument("topic")
        cmd.add_argument("data", help="JSON value")
        cmd.add_argument("--timeout", type=float)
        add_declare_option(cmd)

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

    schema = command("schema", "write the AsyncAPI 3.0 document of a service's handlers")
    schema.add_argument("modules", nargs="+", help="handler modules (dotted names or .py files) to import")
    schema.add_argument("--queue", help="the service's name (default: the first module's)")
    schema.add_argument("-o", "--output", metavar="FILE", help="write it there (default: stdout)")
    schema.add_argument("--title", help="the document's title (default: the service's name)")
    schema.add_argument("--version", default="0.0.0", help="the contract's version (default 0.0.0)")

    demo_cmd = command("demo", "run the demo (memory:// unless --broker is given)")
    demo_cmd.add_argument("--caller-broker", metavar="URL", help="the demo client's URL (default --broker)")
    demo_cmd.add_argument(
        "--definitions", action="store_true", help="print the demo's definitions document instead"
    )
    demo_cmd.add_argument("--vhost", help="with --definitions: the vhost (default: the broker URL's)")
    add_declare_option(demo_cmd)

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
        return _demo(args)
    settings = Settings.from_env(**settings_overrides(vars(args)))
    if args.command == "worker":
        return _worker(args, settings)
    if args.command == "topology":
        return _topology(args, settings)
    if args.command == "schema":
        return _schema(args, settings)
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


def _topology(args: argparse.Namespace, settings: Settings) -> int:
    from tchu_rpc.process import import_handlers
    from tchu_rpc.registry import default_registry

    import_handlers(args.modules)
    users = {"worker_user": args.worker_user, "caller_user": args.caller_user}
    print(definitions.render({args.queue: default_registry}, settings, args.vhost, **users))
    return 0


def _schema(args: argparse.Namespace, settings: Settings) -> int:
    from tchu_rpc.contrib import asyncapi
    from tchu_rpc.process import import_handlers
    from tchu_rpc.registry import default_registry

    import_handlers(args.modules)
    first = args.modules[0]
    service = args.queue or (Path(first).stem if first.endswith(".py") else first)
    doc = asyncapi.document({service: default_registry}, settings, title=args.title, version=args.version)
    text = json.dumps(doc, indent=2) + "\n"
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def _demo(args: argparse.Namespace) -> int:
    broker = args.broker or "memory://"
    if args.definitions:
        print(demo.definitions(args.vhost or definitions.vhost_of(Settings(broker_url=broker))))
        return 0
    return demo.run(broker, caller_url=args.caller_broker, declare=args.declare or "declare")


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
