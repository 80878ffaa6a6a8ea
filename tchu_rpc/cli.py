"""The `tchu-rpc` command: a thin shell over the library (worker, topology, call, publish, dead...)."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tchu_rpc import dead, definitions, demo
from tchu_rpc.client import Client
from tchu_rpc.config import Settings
from tchu_rpc.errors import TchuError
from tchu_rpc.log import configure


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of `tchu-rpc`."""
    parser = argparse.ArgumentParser(prog="tchu-rpc", description=__doc__)
    parser.add_argument("--log-level", default="info", help="debug, info, warning or error")
    sub = parser.add_subparsers(dest="command", required=True)

    worker = sub.add_parser("worker", help="run worker processes for handler modules")
    worker.add_argument("modules", nargs="+", help="modules (dotted names or .py files) to import")
    worker.add_argument("--queue", required=True, help="the service's name (queue prefix)")
    worker.add_argument("--concurrency", type=int, default=1, help="worker processes")
    worker.add_argument("--call-threads", type=int, help="handler threads for calls per process")
    worker.add_argument("--event-threads", type=int, help="handler threads for events per process")
    worker.add_argument("--event-prefetch", type=int, help="unacked events per process")
    worker.add_argument("--reply-cache", metavar="REDIS_URL", help="answer redelivered calls from this cache")
    worker.add_argument(
        "--accept-tchu-tchu",
        action="store_true",
        default=None,
        help="also serve tchu-tchu clients (their calls and events on the events exchange)",
    )
    worker.add_argument(
        "--legacy-queue",
        metavar="NAME",
        help="take over this tchu-tchu service queue (setup_celery_queue's); implies --accept-tchu-tchu",
    )
    _declare(worker)
    _broker(worker)

    topo = sub.add_parser(
        "topology", help="print a service's RabbitMQ definitions document and its users' permissions"
    )
    topo.add_argument("modules", nargs="+", help="modules (dotted names or .py files) to import")
    topo.add_argument("--queue", required=True, help="the service's name (queue prefix)")
    topo.add_argument("--vhost", help="the vhost the definitions are for (default: the broker URL's)")
    topo.add_argument("--worker-user", metavar="USER", help="also grant USER the worker's permissions")
    topo.add_argument("--caller-user", metavar="USER", help="also grant USER the caller's permissions")
    _broker(topo)

    for name, text in (
        ("call", "call a topic and print the result"),
        ("publish", "publish an event"),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("topic")
        cmd.add_argument("data", help="JSON value")
        cmd.add_argument("--timeout", type=float)
        _declare(cmd)
        _broker(cmd)

    dead_cmd = sub.add_parser("dead", help="list a service's dead letters, or replay them (--replay)")
    dead_cmd.add_argument("service", help="the service's name (queue prefix)")
    dead_cmd.add_argument("--replay", action="store_true", help="move letters back to the service's queues")
    dead_cmd.add_argument("--topic", metavar="PATTERN", help="only letters whose topic matches (* and #)")
    dead_cmd.add_argument("--limit", type=int, help="at most N letters (listing: 50; replay: all)")
    dead_cmd.add_argument("--calls", action="store_true", help="replay calls too (their callers are gone)")
    dead_cmd.add_argument("--json", action="store_true", help="print JSON")
    _broker(dead_cmd)

    schema = sub.add_parser("schema", help="write the AsyncAPI 3.0 document of a service's handlers")
    schema.add_argument("modules", nargs="+", help="handler modules (dotted names or .py files) to import")
    schema.add_argument("--queue", help="the service's name (default: the first module's)")
    schema.add_argument("-o", "--output", metavar="FILE", help="write it there (default: stdout)")
    schema.add_argument("--title", help="the document's title (default: the service's name)")
    schema.add_argument("--version", default="0.0.0", help="the contract's version (default 0.0.0)")

    demo_cmd = sub.add_parser("demo", help="run the demo (memory:// unless --broker is given)")
    demo_cmd.add_argument("--broker", default="memory://", help="broker URL (default memory://)")
    demo_cmd.add_argument("--caller-broker", metavar="URL", help="the demo client's URL (default --broker)")
    demo_cmd.add_argument(
        "--definitions", action="store_true", help="print the demo's definitions document instead"
    )
    demo_cmd.add_argument("--vhost", help="with --definitions: the vhost (default: the broker URL's)")
    _declare(demo_cmd)

    # Its arguments are the harness's own (`tchu-rpc bench --help` lists them): main() forwards them.
    sub.add_parser(
        "bench",
        add_help=False,
        help="run the benchmark harness, from a clone of the repository (see `tchu-rpc bench --help`)",
    )
    return parser


def _declare(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--declare",
        choices=("declare", "passive"),
        help="declare exchanges and queues, or only check that they exist (default: TCHU_RPC_DECLARE "
        "or declare)",
    )
    parser.add_argument(
        "--passive-declare", dest="declare", action="store_const", const="passive", help="--declare passive"
    )


def _broker(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker", help="broker URL (default: TCHU_RPC_BROKER_URL or local)")


def main(argv: Sequence[str] | None = None) -> int:
    """Run `tchu-rpc` with `argv`; return the exit code."""
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and args.command != "bench":
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    configure(args.log_level if args.command == "worker" else "warning")
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
    settings = Settings.from_env(
        declare=getattr(args, "declare", None),
        broker_url=getattr(args, "broker", None),
        call_concurrency=getattr(args, "call_threads", None),
        event_concurrency=getattr(args, "event_threads", None),
        event_prefetch=getattr(args, "event_prefetch", None),
        reply_cache_url=getattr(args, "reply_cache", None),
        accept_tchu_tchu=getattr(args, "accept_tchu_tchu", None),
        legacy_queue=getattr(args, "legacy_queue", None),
    )
    if args.command == "worker":
        from tchu_rpc.process import Supervisor, import_handlers

        import_handlers(args.modules)  # fail fast here, before spawning children
        return Supervisor(args.modules, args.queue, settings, args.concurrency, args.log_level).run()
    if args.command == "schema":
        return _schema(args, settings)
    if args.command == "topology":
        from tchu_rpc.process import import_handlers
        from tchu_rpc.registry import default_registry

        import_handlers(args.modules)
        services = {args.queue: default_registry}
        users = {"worker_user": args.worker_user, "caller_user": args.caller_user}
        print(definitions.render(services, settings, args.vhost, **users))
        return 0
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
    if args.definitions:
        print(demo.definitions(args.vhost or definitions.vhost_of(Settings(broker_url=args.broker))))
        return 0
    return demo.run(args.broker, caller_url=args.caller_broker, declare=args.declare or "declare")


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
