"""Command-line options shared by `tchu-rpc` and `manage.py tchu_rpc_worker` (one definition for both)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from tchu_rpc.log import LOG_FORMATS

LOG_LEVELS = ("debug", "info", "warning", "error")


def add_global_options(parser: argparse.ArgumentParser, *, in_subcommand: bool = False) -> None:
    """Add `--broker`, `--log-level` and `--log-format`.

    A parser with subcommands adds them to itself and to each subcommand (`in_subcommand=True`), so
    that they are accepted before and after the subcommand: there they default to nothing, and never
    overwrite a value given before the subcommand.
    """
    default = argparse.SUPPRESS if in_subcommand else None
    add = parser.add_argument
    add("--broker", default=default, metavar="URL", help="broker URL (default: TCHU_RPC_BROKER_URL)")
    add("--log-level", type=str.lower, choices=LOG_LEVELS, default=default, help="default: info for a worker")
    add("--log-format", choices=LOG_FORMATS, default=default, help="console (key=value; the default) or json")


def add_worker_options(parser: argparse.ArgumentParser) -> None:
    """Add the options of a worker (`tchu-rpc worker`, `manage.py tchu_rpc_worker`)."""
    add = parser.add_argument
    add("--queue", required=True, help="the service's name (its queues: NAME.calls, NAME.events, ...)")
    add("--concurrency", type=int, default=1, help="worker processes (default 1)")
    add("--call-threads", type=int, help="handler threads for calls per process")
    add("--event-threads", type=int, help="handler threads for events per process")
    add("--event-prefetch", type=int, help="unacked events per process")
    add("--reply-cache", metavar="REDIS_URL", help="answer redelivered calls from this cache")
    add(
        "--accept-tchu-tchu",
        action="store_true",
        default=None,
        help="also serve tchu-tchu clients (their calls and events on the events exchange)",
    )
    add(
        "--legacy-queue",
        metavar="NAME",
        help="take over this tchu-tchu service queue (setup_celery_queue's); implies --accept-tchu-tchu",
    )
    add("--health-port", type=int, metavar="PORT", help="serve /livez and /readyz on this port")
    add("--metrics-port", type=int, metavar="PORT", help="serve Prometheus metrics on this port")
    add_declare_option(parser)


def add_declare_option(parser: argparse.ArgumentParser) -> None:
    """Add `--declare {declare,passive}` and its short form `--passive-declare` (`Settings.declare`)."""
    parser.add_argument(
        "--declare",
        choices=("declare", "passive"),
        help="declare exchanges and queues, or only check that they exist (default: TCHU_RPC_DECLARE "
        "or declare)",
    )
    parser.add_argument(
        "--passive-declare", dest="declare", action="store_const", const="passive", help="--declare passive"
    )


def settings_overrides(options: Mapping[str, Any]) -> dict[str, Any]:
    """Return the `Settings` fields that parsed options set (those not given are left out)."""
    given = {
        "broker_url": options.get("broker"),
        "call_concurrency": options.get("call_threads"),
        "event_concurrency": options.get("event_threads"),
        "event_prefetch": options.get("event_prefetch"),
        "reply_cache_url": options.get("reply_cache"),
        "accept_tchu_tchu": options.get("accept_tchu_tchu"),
        "legacy_queue": options.get("legacy_queue"),
        "declare": options.get("declare"),
    }
    return {name: value for name, value in given.items() if value is not None}
