"""`manage.py tchu_rpc_worker --queue NAME`: run the supervised worker with the project's subscribers."""

from __future__ import annotations

import sys
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from tchu_rpc.django import outbox, worker
from tchu_rpc.errors import TchuError


class Command(BaseCommand):
    help = "Serve the installed apps' subscribers as the service QUEUE, in supervised processes."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--queue", required=True, help="the service's name (its queues: NAME.calls, ...)")
        parser.add_argument("--concurrency", type=int, default=1, help="worker processes (default 1)")
        parser.add_argument("--log-level", default="info", help="debug, info, warning or error")
        parser.add_argument(
            "--module",
            action="append",
            default=[],
            dest="modules",
            help="another handler module (repeatable)",
        )
        parser.add_argument(
            "--accept-tchu-tchu",
            action="store_true",
            default=None,
            help="also serve tchu-tchu clients (their calls and events on the events exchange)",
        )
        parser.add_argument(
            "--outbox",
            action="store_true",
            help="also send the transactional outbox's events (a relay thread)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        stop_relay = outbox.serving() if options["outbox"] else None
        try:
            code = worker.run(
                options["queue"],
                processes=options["concurrency"],
                log_level=options["log_level"],
                modules=options["modules"],
                accept_tchu_tchu=options["accept_tchu_tchu"],
            )
        except TchuError as exc:
            raise CommandError(f"{type(exc).__name__}: {exc}") from exc
        finally:
            if stop_relay is not None:
                stop_relay()
        if code:
            sys.exit(code)
